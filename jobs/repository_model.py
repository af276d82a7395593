"""Models from a model repository (`DIR/NAME/config.json`, `DIR/NAME/1/model.pt2`) as differentiable classifiers.

The analysis needs input gradients, so it runs the `torch.export` program (or a TorchScript `model.pt`
where only that exists), not the ONNX file. Classification follows the config's test-time augmentation:
`flip` averages the logits of the image and its mirror image, as the service does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from miscause.jobs.data import normalize
from torch import nn

from miscause.errors import MiscauseError

VERSION = "1"


class Frozen(nn.Module):
    """Wraps a loaded program so `train()`/`eval()` are harmless: an exported program is fixed in eval mode."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        for parameter in module.parameters():
            parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> Frozen:
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


@dataclass
class RepositoryModel:
    """A loaded model: its network (normalised NCHW float in, logits out), classes and input settings."""

    name: str
    module: nn.Module
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    tta: str
    config: dict
    path: Path

    def to(self, device: torch.device) -> RepositoryModel:
        self.module = self.module.to(device)
        return self

    def prepare(self, images: np.ndarray, device: torch.device) -> torch.Tensor:
        """uint8 [N,H,W,3] to the model's normalised float [N,3,H,W] on `device`."""
        return normalize(torch.from_numpy(np.ascontiguousarray(images)).to(device), self.mean, self.std)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of normalised images, averaged with the mirrored image's when the config asks for `flip`."""
        out = self.module(x).float()
        if self.tta == "flip":
            out = (out + self.module(x.flip(-1)).float()) / 2
        return out


def read_config(folder: Path) -> dict:
    """The model's `config.json`, checked for the fields the analysis uses."""
    path = folder / "config.json"
    if not path.is_file():
        raise MiscauseError(f"{folder} is not a model in a repository: no config.json")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MiscauseError(f"{path}: cannot read ({error})") from error
    missing = [key for key in ("classes", "normalization") if key not in config]
    if missing or not isinstance(config.get("normalization"), dict):
        raise MiscauseError(f"{path}: missing {', '.join(missing) or 'normalization mean/std'}")
    norm = config["normalization"]
    if len(norm.get("mean", [])) != 3 or len(norm.get("std", [])) != 3:
        raise MiscauseError(f"{path}: normalization needs three-value mean and std")
    return config


def load_network(folder: Path) -> nn.Module:
    """The torch program of version 1: `model.pt2` (torch.export) or else `model.pt` (TorchScript)."""
    program, script = folder / VERSION / "model.pt2", folder / VERSION / "model.pt"
    try:
        if program.is_file():
            return Frozen(torch.export.load(str(program)).module())
        if script.is_file():
            return Frozen(torch.jit.load(str(script), map_location="cpu").eval())
    except Exception as error:  # torch raises many types for a corrupt or incompatible program
        raise MiscauseError(f"cannot load the torch program in {folder / VERSION}: {error}") from error
    raise MiscauseError(f"{folder / VERSION} holds neither model.pt2 nor model.pt (needed for saliency)")


def load_model(repository: str | os.PathLike, name: str) -> RepositoryModel:
    """Load `repository/name`; every failure is a `MiscauseError` that says which file is wrong."""
    folder = Path(repository) / name
    if not folder.is_dir():
        raise MiscauseError(f"model {name!r} not found in repository {repository}")
    config = read_config(folder)
    norm = config["normalization"]
    tta = config.get("tta", "none")
    if tta not in ("flip", "none"):
        raise MiscauseError(f"{folder / 'config.json'}: tta must be 'flip' or 'none', got {tta!r}")
    return RepositoryModel(name, load_network(folder), tuple(str(c) for c in config["classes"]),
                           tuple(float(v) for v in norm["mean"]), tuple(float(v) for v in norm["std"]), tta,
                           config, folder)


def repository_models(repository: str | os.PathLike) -> list[str]:
    """Names of the models in a repository (sub-folders with a config.json), sorted."""
    root = Path(repository)
    if not root.is_dir():
        raise MiscauseError(f"model repository not found: {root}")
    names = sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())
    if not names:
        raise MiscauseError(f"model repository {root} holds no models (no */config.json)")
    return names
