"""`miscause bench train`: training throughput and time-to-accuracy.

From a finished run's metrics.jsonl (written by `miscause train`): images/s and accuracy per epoch, the
cumulative training time, the first epoch reaching each validation-accuracy threshold (runs on the `train`
split), and the test accuracy of the run's checkpoint as served (its recipe's test-time augmentation) where
CIFAR-10 is found, so "accuracy A after T seconds of training" is read off one run without training again.

With `--steps N`: a short measured training per architecture (N steps after warm-up, the architecture's
recipe and batch size, the training job's optimizer, bf16 autocast where the hardware has it, the
training loader's augmentation) on synthetic images; images/s only (the content of the images does not
change the work).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from miscause.benchmarks.model import parse_list
from miscause.benchmarks.report import Run, Table, add_output_arguments
from miscause.errors import MiscauseError

THRESHOLDS = (0.90, 0.93, 0.94, 0.95)
DEFAULT_METRICS = Path("runs/cifarnet/metrics.jsonl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", type=Path, default=DEFAULT_METRICS,
                        help=f"a training run's metrics.jsonl (default: {DEFAULT_METRICS}); 'none' to skip")
    parser.add_argument("--checkpoint", type=Path,
                        help="checkpoint whose test accuracy to measure (default: checkpoint.pt beside --metrics)")
    parser.add_argument("--data", help="CIFAR-10 for the test accuracy (default: $MISCAUSE_DATA, else skipped)")
    parser.add_argument("--steps", type=int, default=0, help="also run a measured training of N steps per arch")
    parser.add_argument("--warmup-steps", type=int, default=2, help="unmeasured steps before those (default: 2)")
    parser.add_argument("--archs", default="cifarnet", help="architectures for --steps, comma-separated, or all")
    parser.add_argument("--batch-size", type=int, help="for --steps (default: each architecture's recipe)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    add_output_arguments(parser)


def read_metrics(path: Path) -> list[dict]:
    """The epochs of a run's metrics.jsonl, in order; a clear error when it is missing or malformed."""
    try:
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise MiscauseError(f"no metrics file {path}: train first (miscause train ... --out DIR)") from None
    except json.JSONDecodeError as error:
        raise MiscauseError(f"{path} is not JSON lines: {error}") from None
    if not records or any("epoch" not in r or "seconds" not in r for r in records):
        raise MiscauseError(f"{path} holds no epoch records")
    return sorted(records, key=lambda r: r["epoch"])


def run_summary(records: list[dict]) -> tuple[Table, dict]:
    """Per-epoch table with cumulative time, and the run's totals and threshold times."""
    has_val = all("val_acc" in r for r in records)
    columns = ["epoch", "train_acc", *(["val_acc"] if has_val else []), "images/s", "epoch s", "cumulative s"]
    table = Table("Training run, per epoch", columns)
    cumulative, reached = 0.0, {}
    for record in records:
        cumulative += record["seconds"]
        table.rows.append([record["epoch"], record["train_acc"], *([record["val_acc"]] if has_val else []),
                           record["images_per_s"], record["seconds"], cumulative])
        for threshold in THRESHOLDS:
            if has_val and record["val_acc"] >= threshold and threshold not in reached:
                reached[threshold] = {"epoch": record["epoch"], "seconds": cumulative}
    images = sum(r["images_per_s"] * r["seconds"] for r in records)
    summary = {"epochs": len(records), "training_seconds": cumulative, "images_per_s": images / cumulative,
               "val_thresholds": {str(k): v for k, v in reached.items()}}
    return table, summary


def test_accuracy(checkpoint: Path, data: str | None, device: torch.device) -> float | None:
    """Top-1 test accuracy of a checkpoint as served, or None where no CIFAR-10 copy is given or set."""
    from miscause.jobs.training.checkpoint import load_model
    from miscause.jobs.training.data import load_split
    from miscause.jobs.training.evaluate import predict_torch
    from miscause.jobs.training.zoo import served_model

    if not (data or os.environ.get("MISCAUSE_DATA")) or not checkpoint.is_file():
        return None
    split = load_split(data, "test")
    model, state = load_model(checkpoint)
    logits = predict_torch(served_model(model, state["recipe"].get("tta", "none")), split, state["mean"],
                           state["std"], device, progress=False)
    return float((logits.argmax(1) == split.labels).mean())


def measured_training(arch: str, steps: int, warmup: int, batch_size: int | None, device: torch.device) -> dict:
    """images/s of `steps` training steps of `arch` on synthetic data, after `warmup` steps."""
    from miscause.jobs.training.train import measure_step_seconds, recipe_for

    recipe = recipe_for(arch, {"batch_size": batch_size})
    seconds = measure_step_seconds(arch, recipe, device, steps, warmup) * steps
    return {"arch": arch, "batch_size": recipe.batch_size, "steps": steps, "seconds": seconds,
            "images_per_s": steps * recipe.batch_size / seconds}


def run(args: argparse.Namespace) -> int:
    from miscause.device import bf16_supported, pick_device
    from miscause.jobs.training import zoo

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    use_metrics = str(args.metrics) != "none"
    archs = parse_list(args.archs, list(zoo.REGISTRY), "architecture") if args.steps > 0 else []
    if not use_metrics and not archs:
        raise MiscauseError("nothing to measure: give --metrics, or --steps N for a measured training")
    settings = {"metrics": str(args.metrics) if use_metrics else None, "steps": args.steps,
                "warmup_steps": args.warmup_steps, "archs": archs, "batch_size": args.batch_size,
                "threads": torch.get_num_threads(), "precision": "bf16" if bf16_supported(device) else "fp32"}
    record = Run("train", settings, device=str(device))
    tables, data, notes = [], {}, []
    if use_metrics:
        records = read_metrics(args.metrics)
        table, summary = run_summary(records)
        checkpoint = args.checkpoint or args.metrics.parent / "checkpoint.pt"
        summary["test_accuracy"] = test_accuracy(checkpoint, args.data, device)
        data["run"] = {"metrics": str(args.metrics), "epochs": records, **summary}
        tables.append(table)
        accuracy = summary["test_accuracy"]
        notes.append(f"{args.metrics}: {summary['epochs']} epochs in {summary['training_seconds']:.0f} s of "
                     f"training, {summary['images_per_s']:.0f} images/s overall"
                     + (f"; test accuracy {accuracy:.4f} after {summary['training_seconds']:.0f} s"
                        if accuracy is not None else "; test accuracy not measured (no CIFAR-10 copy given)"))
        notes += [f"validation accuracy {k} first reached at epoch {v['epoch']}, after {v['seconds']:.0f} s"
                  for k, v in summary["val_thresholds"].items()]
    if archs:
        steps = [measured_training(arch, args.steps, args.warmup_steps, args.batch_size, device) for arch in archs]
        data["measured"] = steps
        tables.append(Table(f"Measured training, {args.steps} steps after {args.warmup_steps} warm-up, "
                            "synthetic images", ["arch", "batch", "steps", "seconds", "images/s"],
                            [[s["arch"], s["batch_size"], s["steps"], s["seconds"], s["images_per_s"]]
                             for s in steps]))
    record.finish(tables, data, notes, None if args.no_write else args.out)
    return 0
