"""Export a checkpoint into a model repository: ONNX (opset 18, dynamic batch; normalised float input, and
uint8 pixels with the normalisation inside the graph) and a torch.export program.

The network is exported as it is served (flip test-time augmentation inside the graph when its recipe uses
it). Before anything is written, ONNX Runtime's output is compared with the checkpoint's on the same batch;
on a mismatch nothing is written. The version folder and config.json are each replaced atomically.

example:
  miscause export --checkpoint runs/cifarnet/checkpoint.pt --repository models --name cifarnet
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from miscause import __version__, repository
from miscause.atomic import atomic_directory
from miscause.errors import MiscauseError
from miscause.jobs.training.checkpoint import load_model
from miscause.jobs.training.data import load_split
from miscause.jobs.training.zoo import TTA_CHOICES, served_model
from miscause.pixels import normalize
from miscause.repository import ModelConfig

OPSET = 18
PARITY_BATCH = 64


class Pixels(torch.nn.Module):
    """The network behind the pixel contract: uint8 [N,H,W,C] in, normalised inside the graph, logits out, so
    a server hands ONNX Runtime the request's bytes as they came."""

    def __init__(self, model: torch.nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(normalize(pixels, self.mean, self.std))


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path,
                input_name: str = repository.INPUT_NAME) -> None:
    """ONNX through the dynamo exporter, batch dimension dynamic."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.onnx.export(model, (example,), dynamo=True, opset_version=OPSET,
                                input_names=[input_name], output_names=[repository.OUTPUT_NAME],
                                dynamic_shapes=({0: batch},), verbose=False)
    program.save(str(path))


def export_program(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """A torch.export program (the current replacement for TorchScript), batch dimension dynamic."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: batch},)), str(path))


def parity(model: torch.nn.Module, onnx_path: Path, images: torch.Tensor,
           input_name: str = repository.INPUT_NAME) -> tuple[float, int]:
    """(max |logit difference|, argmax disagreements) between torch and ONNX Runtime on `images`."""
    with torch.no_grad():
        expected = model(images).numpy()
    got = repository.onnx_session(onnx_path).run(None, {input_name: images.numpy()})[0]
    return float(np.abs(expected - got).max()), int((expected.argmax(1) != got.argmax(1)).sum())


def parity_pixels(state: dict, data: str | None) -> torch.Tensor:
    """A uint8 [N,H,W,C] batch to compare on: real test images where data is given, else seeded noise."""
    if data:
        split = load_split(data, "test")
        index = np.random.default_rng(0).permutation(len(split))[:PARITY_BATCH]
        return torch.from_numpy(split.images[index])
    height, width, channels = state.get("input_shape", (32, 32, 3))
    return torch.randint(0, 256, (PARITY_BATCH, height, width, channels), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


def build_config(name: str, state: dict, checkpoint: Path, tta: str) -> ModelConfig:
    """The exported model's config: what a reader needs to feed it and name its outputs, and its provenance."""
    height, width, channels = state.get("input_shape", (32, 32, 3))
    return ModelConfig(
        name=name, architecture=state["arch"], classes=tuple(state["classes"]), mean=tuple(state["mean"]),
        std=tuple(state["std"]), shape=(channels, height, width), tta=tta,
        training={"epochs": state["epoch"], "seed": state.get("seed"), "split": state.get("split"),
                  "recipe": state["recipe"],
                  "checkpoint_sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest()},
        versions={"miscause": __version__, "torch": torch.__version__, "onnx_opset": OPSET},
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--repository", required=True, type=Path, help="model repository folder")
    parser.add_argument("--name", required=True, help="model name: the folder under the repository")
    parser.add_argument("--data", help="compare on real test images from here (default: Gaussian noise)")
    parser.add_argument("--tta", choices=("auto", *TTA_CHOICES), default="auto",
                        help="test-time augmentation exported inside the graph; auto: as the recipe serves it")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest |logit difference| accepted")


def run(args: argparse.Namespace) -> int:
    if not args.name or "/" in args.name or args.name.startswith("."):
        raise MiscauseError(f"invalid model name {args.name!r}: one folder name, not starting with '.'")
    model, state = load_model(args.checkpoint)
    tta = state["recipe"].get("tta", "none") if args.tta == "auto" else args.tta
    model = served_model(model, tta)
    pixels = parity_pixels(state, args.data)
    images = normalize(pixels, state["mean"], state["std"])
    pixel_model = Pixels(model, state["mean"], state["std"]).eval()
    model_dir = args.repository / args.name
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path, program_path = Path(scratch) / repository.ONNX_FILE, Path(scratch) / repository.PROGRAM_FILE
        pixels_path = Path(scratch) / repository.PIXELS_ONNX_FILE
        export_onnx(model, images[:2], onnx_path)
        export_onnx(pixel_model, pixels[:2], pixels_path, repository.PIXELS_INPUT_NAME)
        for path, net, inputs, name in ((onnx_path, model, images, repository.INPUT_NAME),
                                        (pixels_path, pixel_model, pixels, repository.PIXELS_INPUT_NAME)):
            difference, disagreements = parity(net, path, inputs, name)
            print(f"{path.name}: parity on {len(images)} images: max |logit difference| {difference:.2e}, "
                  f"argmax disagreements {disagreements}")
            if disagreements or difference > args.tolerance:
                raise MiscauseError(f"ONNX Runtime disagrees with the checkpoint in {path.name} (max difference "
                                    f"{difference:.2e}, {disagreements} labels): nothing written")
        export_program(model, images[:2], program_path)
        with atomic_directory(model_dir / repository.VERSION) as version:
            for path in (onnx_path, pixels_path, program_path):
                shutil.move(path, version / path.name)
    repository.write_config(model_dir, build_config(args.name, state, args.checkpoint, tta))
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in sorted((model_dir / "1").iterdir()))
    print(f"exported {state['arch']} as {model_dir} ({sizes})")
    return 0
