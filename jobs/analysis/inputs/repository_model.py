"""Models of a model repository (`miscause.repository`) as differentiable classifiers for the analysis.

The analysis needs input gradients, so it runs each model's `torch.export` program, not its ONNX file. The
program is the network as served, test-time augmentation included (the export wraps it), so its logits are
the service's logits and its gradients are those of the served function.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from miscause import repository
from miscause.errors import MiscauseError
from miscause.pixels import normalize
from miscause.repository import ModelConfig


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
    """A loaded model: its network (normalised NCHW float in, logits out), classes and normalisation."""

    name: str
    module: nn.Module
    config: ModelConfig
    path: Path

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.classes

    @property
    def mean(self) -> tuple[float, ...]:
        return self.config.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.config.std

    def prepare(self, images: np.ndarray, device: torch.device) -> torch.Tensor:
        """uint8 [N,H,W,3] to the model's normalised float [N,3,H,W] on `device`."""
        return normalize(torch.from_numpy(np.ascontiguousarray(images)).to(device), self.mean, self.std)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 logits of normalised images."""
        return self.module(x).float()


def load_model(root: str | os.PathLike, name: str, device: torch.device) -> RepositoryModel:
    """Load `root/name` onto `device`; every failure is a `MiscauseError` that says which file is wrong."""
    folder = Path(root) / name
    if not folder.is_dir():
        raise MiscauseError(f"model {name!r} not found in repository {root}")
    config = repository.read_config(folder)
    program = folder / repository.VERSION / repository.PROGRAM_FILE
    if not program.is_file():
        raise MiscauseError(f"no {repository.PROGRAM_FILE} in {program.parent} (the analysis needs it for saliency)")
    module = Frozen(repository.load_program(folder, str(device)))
    return RepositoryModel(name, module, config, folder)


def model_names(root: str | os.PathLike) -> list[str]:
    """The repository's models; an error when it holds none."""
    names = repository.model_names(root)
    if not names:
        raise MiscauseError(f"model repository {root} holds no models (no */{repository.CONFIG})")
    return names


def live_model(name: str, network: nn.Module, config: ModelConfig, path: Path, device: torch.device) -> RepositoryModel:
    """A network in memory, as served (eval mode, its test-time augmentation applied), in the shape of a
    repository's model: the study's stage runs the erasure study on the model it has just trained."""
    return RepositoryModel(name, Frozen(network.to(device)), config, path)
