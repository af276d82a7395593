"""The model repository: the one format the export job writes and the server and analysis read.

Layout (as Triton Inference Server lays out a repository):

    REPO/NAME/config.json        name, architecture, input, output, classes, normalisation, tta, Grad-CAM layer,
                                 versions
    REPO/NAME/policy.json        optional: when to replace a label by the erased image's (analysis job)
    REPO/NAME/1/model.onnx       forward pass, input "input" float32 [N,3,H,W] normalised, output "logits"
    REPO/NAME/1/model.pt2        the same network as a torch.export program, for the gradient path
    REPO/NAME/samples/*.png      optional: sample images (PNG or JPEG) the inspector page offers
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from miscause.atomic import atomic_path
from miscause.errors import MiscauseError
from miscause.grad_cam_layers import GRAD_CAM, GRAD_CAM_LAYERS

CONFIG = "config.json"
POLICY = "policy.json"
SAMPLES = "samples"
SAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg")
VERSION = "1"
ONNX_FILE = "model.onnx"
PIXELS_ONNX_FILE = "model_pixels.onnx"  # the same network with the pixel normalisation in its graph
PROGRAM_FILE = "model.pt2"
INPUT_NAME = "input"
PIXELS_INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
REQUIRED = ("name", "architecture", "input", "classes", "normalization")


@dataclass(frozen=True)
class ModelConfig:
    """A model's config.json, typed: what every reader needs to feed the model and name its outputs.

    `training` and `versions` are provenance (recipe, seed, split, checkpoint digest; library versions),
    kept as the export wrote them. `grad_cam_layer` names the network's layer Grad-CAM explains, relative to
    the network inside any test-time augmentation; left None, it is the architecture's entry in
    `GRAD_CAM_LAYERS` (so config files written before the field existed still have one), and None still for an
    architecture without one."""

    name: str
    architecture: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    shape: tuple[int, int, int]  # channels, height, width
    tta: str = "none"
    training: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    grad_cam_layer: str | None = None

    def __post_init__(self) -> None:
        if self.grad_cam_layer is None:
            object.__setattr__(self, "grad_cam_layer", GRAD_CAM_LAYERS.get(self.architecture))

    def offers(self, method: str) -> bool:
        """Whether this model can run saliency `method`: Grad-CAM only where the config names a layer to explain."""
        return method != GRAD_CAM or bool(self.grad_cam_layer)

    def saliency_options(self, method: str) -> dict:
        """The settings of this model that saliency `method` needs: Grad-CAM's layer; none for the others."""
        if method != GRAD_CAM:
            return {}
        if self.grad_cam_layer is None:
            raise MiscauseError(f"model {self.name}: no Grad-CAM layer for architecture {self.architecture!r} "
                                "(its config.json names no grad_cam_layer)")
        return {"layer": self.grad_cam_layer}

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def height(self) -> int:
        return self.shape[1]

    @property
    def width(self) -> int:
        return self.shape[2]

    def to_json(self) -> dict:
        """The config.json document (Triton-like: input and output tensors, then what miscause adds)."""
        return {
            "name": self.name,
            "architecture": self.architecture,
            "input": {"name": INPUT_NAME, "shape": list(self.shape), "dtype": "float32", "layout": "NCHW",
                      "normalized": True},
            "output": {"name": OUTPUT_NAME, "shape": [len(self.classes)], "dtype": "float32"},
            "classes": list(self.classes),
            "normalization": {"mean": list(self.mean), "std": list(self.std)},
            "tta": self.tta,
            "pixels_input": {"name": PIXELS_INPUT_NAME, "shape": [self.height, self.width, self.channels],
                             "dtype": "uint8", "layout": "NHWC"},
            **({"grad_cam_layer": self.grad_cam_layer} if self.grad_cam_layer else {}),
            "files": {"onnx": f"{VERSION}/{ONNX_FILE}", "onnx_pixels": f"{VERSION}/{PIXELS_ONNX_FILE}",
                      "torch_export": f"{VERSION}/{PROGRAM_FILE}"},
            "training": self.training,
            "versions": self.versions,
        }

    @classmethod
    def from_json(cls, raw: object, source: str) -> ModelConfig:
        """Checked: a MiscauseError names the file and the first field that is missing or malformed."""
        if not isinstance(raw, dict):
            raise MiscauseError(f"{source}: a model config must be a JSON object")
        missing = [key for key in REQUIRED if key not in raw]
        if missing:
            raise MiscauseError(f"{source} lacks {', '.join(missing)}")
        shape = raw["input"].get("shape") if isinstance(raw["input"], dict) else None
        if not (isinstance(shape, list) and len(shape) == 3 and shape[0] == 3
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
            raise MiscauseError(f"{source}: input shape must be [3, H, W], got {shape!r}")
        norm = raw["normalization"]
        if not isinstance(norm, dict) or not all(_numbers(norm.get(key), 3) for key in ("mean", "std")):
            raise MiscauseError(f"{source}: normalization needs three-value mean and std")
        classes = raw["classes"]
        if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
            raise MiscauseError(f"{source}: classes must be a non-empty list of names")
        layer = raw.get("grad_cam_layer")
        if layer is not None and not (isinstance(layer, str) and layer):
            raise MiscauseError(f"{source}: grad_cam_layer must be a layer name, got {layer!r}")
        return cls(name=str(raw["name"]), architecture=str(raw["architecture"]), classes=tuple(classes),
                   mean=tuple(float(v) for v in norm["mean"]), std=tuple(float(v) for v in norm["std"]),
                   shape=tuple(shape), tta=str(raw.get("tta", "none")), training=raw.get("training") or {},
                   versions=raw.get("versions") or {}, grad_cam_layer=layer)


def _numbers(value: object, count: int) -> bool:
    return isinstance(value, list) and len(value) == count and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value)


def read_config(model_dir: str | os.PathLike) -> ModelConfig:
    """A model's config.json, checked for the fields every reader relies on."""
    path = Path(model_dir) / CONFIG
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise MiscauseError(f"no {CONFIG} in {model_dir}: not a model folder of a miscause repository") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MiscauseError(f"{path} is not valid JSON: {error}") from None
    return ModelConfig.from_json(raw, str(path))


def write_config(model_dir: str | os.PathLike, config: ModelConfig) -> None:
    """Write config.json atomically."""
    with atomic_path(Path(model_dir) / CONFIG) as tmp:
        tmp.write_text(json.dumps(config.to_json(), indent=2) + "\n")


def model_names(repository: str | os.PathLike) -> list[str]:
    """The models in a repository: every sub-folder holding a config.json, sorted."""
    root = Path(repository)
    if not root.is_dir():
        raise MiscauseError(f"model repository not found: {root}")
    return sorted(p.name for p in root.iterdir() if (p / CONFIG).is_file())


def sample_images(model_dir: str | os.PathLike) -> list[Path]:
    """The model's sample images (`samples/*.png`, `*.jpg`, `*.jpeg`), sorted; none when it has no sample set."""
    folder = Path(model_dir) / SAMPLES
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SAMPLE_SUFFIXES and p.is_file())


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
        self.mean, self.std = self.config.mean, self.config.std
        self.session = onnx_session(Path(model_dir) / VERSION / ONNX_FILE, threads=threads)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, np.float32)})[0]


def load_program(model_dir: str | os.PathLike, device: str = "cpu"):
    """The torch.export program of a repository model as a callable module (for gradients), unflattened so it
    keeps the network's module hierarchy: a layer is found by its name (Grad-CAM hooks it)."""
    import torch

    path = Path(model_dir) / VERSION / PROGRAM_FILE
    try:
        program = torch.export.load(str(path))
    except FileNotFoundError:
        raise MiscauseError(f"no {PROGRAM_FILE} in {path.parent}") from None
    except Exception as error:
        raise MiscauseError(f"cannot load torch program {path}: {error}") from None
    return torch.export.unflatten(program).to(device)
