"""Evaluate a checkpoint, or an exported model as served (ONNX Runtime), and write its predictions file.

The predictions file is the contract the analysis job reads: `logits` float32 [N,K], `labels` int64 [N],
`indices` int64 [N] (position in the split, in order), `classes` str [K], `name` str.

examples:
  miscause evaluate --checkpoint runs/cifarnet/checkpoint.pt --split test --out preds/cifarnet.npz
  miscause evaluate --repository models --name cifarnet --split test --out preds/cifarnet-onnx.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from miscause.atomic import atomic_path
from miscause.device import autocast, pick_device
from miscause.errors import MiscauseError
from miscause.jobs.training.checkpoint import load_model
from miscause.jobs.training.data import Split, load_split
from miscause.jobs.training.zoo import TTA_CHOICES, served_model
from miscause.pixels import normalize
from miscause.repository import OnnxModel


@torch.no_grad()
def predict_torch(model: torch.nn.Module, split: Split, mean, std, device: torch.device,
                  batch_size: int = 1000, progress: bool = True) -> np.ndarray:
    """Logits float32 [N,K] of a torch model over a split, in split order."""
    model = model.to(device)
    out = []
    for start in tqdm(range(0, len(split), batch_size), disable=not progress, desc="evaluate", leave=False):
        images = normalize(torch.from_numpy(split.images[start:start + batch_size]).to(device), mean, std)
        with autocast(device) if device.type == "cuda" else torch.autocast("cpu", enabled=False):
            out.append(model(images).float().cpu())
    return torch.cat(out).numpy()


def predict_onnx(model: OnnxModel, split: Split, batch_size: int = 500, progress: bool = True) -> np.ndarray:
    """Logits float32 [N,K] of an exported ONNX model over a split, in split order."""
    out = []
    for start in tqdm(range(0, len(split), batch_size), disable=not progress, desc="evaluate", leave=False):
        images = normalize(torch.from_numpy(split.images[start:start + batch_size]), model.mean, model.std)
        out.append(model(images.numpy()))
    return np.concatenate(out)


def write_predictions(path: Path, name: str, logits: np.ndarray, split: Split) -> float:
    """Write the predictions file atomically; return the top-1 accuracy."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, logits=logits.astype(np.float32), labels=split.labels.astype(np.int64),
                 indices=np.arange(len(split), dtype=np.int64), classes=np.asarray(split.classes),
                 name=np.asarray(name))
    return float((logits.argmax(1) == split.labels).mean())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a training checkpoint (checkpoint.pt)")
    source.add_argument("--repository", type=Path, help="a model repository; evaluates NAME/1/model.onnx")
    parser.add_argument("--name", help="model name in the repository; with --checkpoint, the name recorded")
    parser.add_argument("--data", help="CIFAR-10 batches or an image folder (default: $MISCAUSE_DATA)")
    parser.add_argument("--split", default="test", choices=("test", "val", "train", "trainval"))
    parser.add_argument("--out", required=True, type=Path, help="predictions file to write (.npz)")
    parser.add_argument("--tta", choices=("auto", *TTA_CHOICES), default="auto",
                        help="checkpoint only; auto: as the recipe serves it")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")


def check_classes(model_classes: tuple[str, ...], split: Split, name: str = "the model") -> None:
    """The model's classes must be the data's, in the same order, or every label would be misread."""
    if tuple(model_classes) != split.classes:
        raise MiscauseError(f"{name} has {len(model_classes)} classes {list(model_classes)[:3]}..., the data "
                            f"{len(split.classes)} {list(split.classes)[:3]}...: they must match")


def run(args: argparse.Namespace) -> int:
    split = load_split(args.data, args.split)
    if args.checkpoint:
        model, state = load_model(args.checkpoint)
        check_classes(state["classes"], split)
        name = args.name or state["arch"]
        tta = state["recipe"].get("tta", "none") if args.tta == "auto" else args.tta
        logits = predict_torch(served_model(model, tta), split, state["mean"], state["std"],
                               pick_device(args.device), progress=not args.no_progress)
    else:
        if not args.name:
            raise MiscauseError("--repository needs --name (the model's folder in the repository)")
        model = OnnxModel(args.repository / args.name)
        check_classes(model.config.classes, split)
        name = args.name
        logits = predict_onnx(model, split, progress=not args.no_progress)
    accuracy = write_predictions(args.out, name, logits, split)
    print(f"{name}: {args.split} accuracy {accuracy:.4f} ({round(accuracy * len(split))}/{len(split)}) "
          f"-> {args.out}")
    return 0
