"""One model's self-contained study stage (an architecture and a training seed): train, then from the trained
model the erasure study's validation and test runs, the test images' deletion and insertion curves and the
model-randomisation check of the saliency maps, written as one result file (`miscause.jobs.analysis.inputs.results`)
named for the model, `ARCH_sSEED.npz`, and no weights.

Made for a lent device whose files cannot outlive the call: the stage runs start to finish in one process,
its training resumes from the last epoch if the call is restarted, and only the result file is kept.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from miscause.cli import COMMANDS, run_subcommand
from miscause.defaults import RANDOMISATION_IMAGES
from miscause.device import describe, pick_device
from miscause.errors import MiscauseError
from miscause.jobs.analysis.erasure.collect import collect_runs
from miscause.jobs.analysis.erasure.run import ErasureOptions
from miscause.jobs.analysis.inputs.images import Images, subset
from miscause.jobs.analysis.inputs.repository_model import RepositoryModel, live_model
from miscause.jobs.analysis.inputs.results import anchor_descriptions, write_results
from miscause.jobs.analysis.versions import versions
from miscause.jobs.training.checkpoint import load_model
from miscause.jobs.training.data import load_split
from miscause.jobs.training.evaluate import check_classes
from miscause.jobs.training.export import build_config
from miscause.jobs.training.zoo import served_model


def invoke(command: str, argv: list) -> None:
    """Run a job exactly as its command line would, with the same parser and defaults."""
    status = run_subcommand(f"miscause {command}", COMMANDS[command][0], argv)
    if status:
        raise MiscauseError(f"miscause {command} exited with status {status}")


@dataclass(frozen=True, kw_only=True)
class StageRequest:
    """What one stage does: the architecture and seed, its data and planned schedule, the erasure study's
    settings, the test images of the model-randomisation check, where its result file goes."""

    arch: str
    data: str
    out: Path  # the study folder: runs/MODEL/ (scratch)
    results: Path  # the result files' folder: MODEL.npz
    epochs: int
    batch_size: int | None
    limit: int | None
    seed: int
    erasure: ErasureOptions
    examples: int
    device: str
    progress: bool
    plan: dict
    randomisation_images: int = RANDOMISATION_IMAGES

    @property
    def name(self) -> str:
        return model_name(self.arch, self.seed)

    @property
    def run_dir(self) -> Path:
        return self.out / "runs" / self.name

    @property
    def result_path(self) -> Path:
        return result_path(self.results, self.name)


def model_name(arch: str, seed: int) -> str:
    """A stage's model: its architecture and training seed, e.g. `resnet18_s1`."""
    return f"{arch}_s{seed}"


def result_path(results: Path, name: str) -> Path:
    """Where a model's result file is kept in the result files' folder."""
    return results / f"{name}.npz"


def train_job(arch: str, data: str, run_dir: Path, seed: int, device: str, epochs: int | None,
              batch_size: int | None, limit: int | None, progress: bool) -> tuple[str, list]:
    """A study's training job: the `train` split (validation accuracy each epoch), resuming its checkpoint."""
    options = ["--epochs", epochs] if epochs else []
    options += ["--limit", limit] if limit else []
    options += ["--batch-size", batch_size] if batch_size else []
    options += [] if progress else ["--no-progress"]
    return "train", ["--arch", arch, "--data", data, "--split", "train", "--out", run_dir, "--seed", seed,
                     "--resume", "--device", device, *options]


def train(request: StageRequest) -> list[dict]:
    """Train the stage's architecture; the epoch records."""
    invoke(*train_job(request.arch, request.data, request.run_dir, request.seed, request.device, request.epochs,
                      request.batch_size, request.limit, request.progress))
    return [json.loads(line) for line in (request.run_dir / "metrics.jsonl").read_text().splitlines()]


def trained_model(request: StageRequest, device: torch.device) -> tuple[RepositoryModel, dict]:
    """The trained network as served, ready for the erasure study, and its checkpoint."""
    checkpoint = request.run_dir / "checkpoint.pt"
    network, state = load_model(checkpoint)
    tta = state["recipe"].get("tta", "none")
    config = build_config(request.arch, state, checkpoint, tta)
    return live_model(request.name, served_model(network, tta), config, request.run_dir, device), state


def stage_images(request: StageRequest, model: RepositoryModel,
                 seconds: dict) -> tuple[dict[str, Images], dict[str, int]]:
    """The validation and test images of the erasure study (with a limit, that many drawn with the seed, as the
    analysis draws them) and the splits' sizes; each split's loading time into `seconds`."""
    images, sizes = {}, {}
    for split in ("val", "test"):
        started = time.perf_counter()
        data = load_split(request.data, split)
        check_classes(model.classes, data)
        images[split] = subset(data, request.limit, request.seed)
        sizes[f"{split}_size"] = len(data)
        seconds[f"erasure_{split}"] = time.perf_counter() - started
    return images, sizes


def run_stage(request: StageRequest) -> Path:
    """Train, evaluate and run the erasure study, then write the result file; its path."""
    started = time.perf_counter()
    request.erasure.check()
    device = pick_device(request.device)
    records = train(request)
    seconds = {"train": time.perf_counter() - started, "train_epochs": sum(r["seconds"] for r in records)}
    model, state = trained_model(request, device)
    images, sizes = stage_images(request, model, seconds)
    collected = collect_runs(model, images, request.erasure, examples_count=request.examples,
                             randomisation_images=request.randomisation_images, device=device,
                             progress=request.progress, seconds=seconds)
    runs = {"val": collected.val, "test": collected.test}
    seconds["total"] = time.perf_counter() - started
    accuracy = {split: float((run.predicted == run.labels).mean()) for split, run in runs.items()}
    trained_images = sum(r["images_per_s"] * r["seconds"] for r in records)
    meta = {
        "arch": request.arch, "model": request.name, "classes": list(model.classes), "mean": list(model.mean),
        "std": list(model.std), "tta": model.config.tta, "accuracy": accuracy, "epochs": state["epoch"],
        "training": {"split": state["split"], "seed": state["seed"], "limit": request.limit,
                     "recipe": state["recipe"], "epochs": records},
        "erasure": asdict(request.erasure), "anchors": anchor_descriptions(request.erasure),
        "data": {"path": str(request.data), "limit": request.limit, **sizes},
        "device": describe(device), "versions": {**versions(), "cuda": torch.version.cuda},
        "seconds": seconds,
        "images_per_s": {"train": trained_images / seconds["train_epochs"],
                         **{f"erasure_{split}": len(run.labels) / seconds[f"erasure_{split}"]
                            for split, run in runs.items()}},
        "plan": request.plan,
    }
    path = write_results(request.result_path, meta, collected)
    print(f"{request.name}: {state['epoch']} epochs, val accuracy {accuracy['val']:.4f}, test accuracy "
          f"{accuracy['test']:.4f}, {seconds['total']:.0f} s on {meta['device']} -> {path} "
          f"({path.stat().st_size / 1e6:.1f} MB)")
    return path
