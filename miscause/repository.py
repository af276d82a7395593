"""The model repository: the one format the export job writes and the server and analysis read.

Layout (as Triton Inference Server lays out a repository):

    REPO/NAME/config.json        name, architecture, input, output, classes, normalisation, tta, versions
    REPO/NAME/policy.json        optional: when to replace a label by the erased image's (analysis job)
    REPO/NAME/1/model.onnx       forward pass, input "input" float32 [N,3,H,W] normalised, output "logits"
    REPO/NAME/1/model.pt2        the same network as a torch.export program, for the gradient path
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from miscause.errors import MiscauseError

CONFIG = "config.json"
POLICY = "policy.json"
VERSION = "1"
ONNX_FILE = "model.onnx"
PROGRAM_FILE = "model.pt2"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
REQUIRED = ("name", "architecture", "input", "classes", "normalization")


def read_config(model_dir: str | os.PathLike) -> dict:
    """A model's config.json, checked for the fields every reader relies on."""
    path = Path(model_dir) / CONFIG
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise MiscauseError(f"no {CONFIG} in {model_dir}: not a model folder of a miscause repository") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MiscauseError(f"{path} is not valid JSON: {error}") from None
    missing = [key for key in REQUIRED if key not in config]
    if missing:
        raise MiscauseError(f"{path} lacks {', '.join(missing)}")
    return config


def read_policy(model_dir: str | os.PathLike) -> dict | None:
    """The model's policy.json, or None when it has none."""
    path = Path(model_dir) / POLICY
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MiscauseError(f"{path} is not valid JSON: {error}") from None


def model_names(repository: str | os.PathLike) -> list[str]:
    """The models in a repository: every sub-folder holding a config.json, sorted."""
    root = Path(repository)
    if not root.is_dir():
        raise MiscauseError(f"model repository not found: {root}")
    return sorted(p.name for p in root.iterdir() if (p / CONFIG).is_file())


def onnx_session(path: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None):
    """An ONNX Runtime session with the best available provider (CUDA where present, else CPU)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    chosen = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    except Exception as error:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise MiscauseError(f"cannot load ONNX model {path}: {error}") from None


class OnnxModel:
    """A repository model's ONNX forward pass on numpy arrays: normalised float32 [N,3,H,W] -> logits."""

    def __init__(self, model_dir: str | os.PathLike, threads: int | None = None) -> None:
        self.config = read_config(model_dir)
        self.mean = tuple(self.config["normalization"]["mean"])
        self.std = tuple(self.config["normalization"]["std"])
        self.session = onnx_session(Path(model_dir) / VERSION / ONNX_FILE, threads=threads)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, np.float32)})[0]


def load_program(model_dir: str | os.PathLike, device: str = "cpu"):
    """The torch.export program of a repository model as a callable module (for gradients)."""
    import torch

    path = Path(model_dir) / VERSION / PROGRAM_FILE
    try:
        program = torch.export.load(str(path))
    except FileNotFoundError:
        raise MiscauseError(f"no {PROGRAM_FILE} in {path.parent}") from None
    except Exception as error:
        raise MiscauseError(f"cannot load torch program {path}: {error}") from None
    return program.module().to(device)
