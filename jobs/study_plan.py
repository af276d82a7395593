"""Planning the study's per-architecture stages: step and erasure times measured on this device, the epochs a
stage can afford within a time budget, and the dry run's table.

Estimates are for the device they were measured on. Training: a few steps of the architecture's recipe and
batch size on random images (`train.measure_step_seconds`); validation after each epoch, a forward pass over
the validation images, is taken as a third of a training step per batch. Erasure study: one batch of the
erasure study's own code (`erasure.run_split`) at the default setting alone, with the study's method, one draw per
control and no further fill, scaled to each split's run by its passes per image (`ErasureOptions.erasure_passes`:
the classifications of every anchor kind, method, setting, fill and draw; `saliency_passes`: a gradient pass per
method, one per step for integrated gradients, each about three forward passes; the validation split runs the
study's method with one draw, `collect.split_options`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from miscause.jobs.analysis.erasure.collect import split_options
from miscause.jobs.analysis.erasure.run import ErasureOptions, run_split
from miscause.jobs.analysis.inputs.repository_model import live_model
from miscause.jobs.analysis.inputs.results import SPLITS
from miscause.jobs.training import zoo
from miscause.jobs.training.data import CIFAR10_MEAN, CIFAR10_STD, VALIDATION_SIZE
from miscause.jobs.training.train import Recipe, measure_step_seconds
from miscause.repository import ModelConfig

CIFAR10_SIZES = {"train": 50_000 - VALIDATION_SIZE, "val": VALIDATION_SIZE, "test": 10_000}
OVERHEAD_SECONDS = 20.0  # per stage: building the model, checkpoints, examples, the result file
CPU_ERASURE_IMAGES = 64  # a CPU's cost per image varies little beyond this batch (resnet18: 1.6x at 16)


@dataclass(frozen=True)
class StagePlan:
    """One architecture's stage: the epochs it will train and the device time it is estimated to take."""

    arch: str
    device: str
    batch_size: int
    epochs: int
    recipe_epochs: int
    images: dict[str, int]
    step_seconds: float
    pass_seconds: float  # seconds per image and forward pass of the erasure study
    erasure_passes: dict[str, int]  # per split, forward passes per image: the erasures' classes and saliency maps
    budget_seconds: float | None = None  # the share of the budget the epochs were fitted to
    model: str | None = None  # the stage's model, e.g. resnet18_s1, where a study names one

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.images["train"] // self.batch_size)

    @property
    def epoch_seconds(self) -> float:
        """Training steps plus the validation pass after the epoch."""
        return self.step_seconds * (self.steps_per_epoch + math.ceil(self.images["val"] / self.batch_size) / 3)

    @property
    def erasure_seconds(self) -> float:
        return self.pass_seconds * sum(self.images[split] * self.erasure_passes[split] for split in SPLITS)

    @property
    def total_seconds(self) -> float:
        return self.epochs * self.epoch_seconds + self.erasure_seconds + OVERHEAD_SECONDS

    def record(self) -> dict:
        """Everything the plan holds, its derived times included (for study.json and the result file)."""
        return {**asdict(self), "steps_per_epoch": self.steps_per_epoch, "epoch_seconds": self.epoch_seconds,
                "erasure_seconds": self.erasure_seconds, "total_seconds": self.total_seconds}


def measure_pass_seconds(arch: str, recipe: Recipe, erasure: ErasureOptions, device: torch.device) -> float:
    """Seconds per image and forward pass of the erasure study, from one batch of the default setting on random
    images."""
    config = ModelConfig(arch, arch, tuple(str(i) for i in range(10)), CIFAR10_MEAN, CIFAR10_STD, (3, 32, 32),
                         recipe.tta)
    model = live_model(arch, zoo.served_model(zoo.build(arch, 10), recipe.tta), config, Path(arch), device)
    n = erasure.batch_size if device.type == "cuda" else min(erasure.batch_size, CPU_ERASURE_IMAGES)
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)
    single = replace(erasure, sweep_top_percent=(erasure.top_percent,), sweep_box=(erasure.box,), sweep_fill=(),
                     sweep_methods=(erasure.saliency_method,), control_draws=1)
    run_split(model, images, labels, np.arange(n), "plan", single, device, progress=False)  # warm-up
    started = time.perf_counter()
    run_split(model, images, labels, np.arange(n), "plan", single, device, progress=False)
    return (time.perf_counter() - started) / n / forward_passes(single)


def forward_passes(erasure: ErasureOptions) -> int:
    """Forward passes per image of the erasure study: its classifications and its saliency maps (a gradient pass
    taken as three forward passes)."""
    return erasure.erasure_passes() + 3 * erasure.saliency_passes()


def split_sizes(data: str | None, limit: int | None) -> dict[str, int]:
    """Images per split the stage will use: the dataset's (CIFAR-10's when none is given), capped at `limit`."""
    from miscause.jobs.training.data import load_split

    sizes = dict(CIFAR10_SIZES) if data is None else {s: len(load_split(data, s)) for s in CIFAR10_SIZES}
    return {split: min(size, limit) if limit else size for split, size in sizes.items()}


def plan_stage(arch: str, recipe: Recipe, images: dict[str, int], erasure: ErasureOptions, device: torch.device,
               budget_seconds: float | None = None, step_seconds: float | None = None) -> StagePlan:
    """Measure (the training step unless `step_seconds` was measured already), then plan the recipe's epochs;
    with a budget, as many of them as fit (at least one)."""
    from miscause.device import describe

    step = step_seconds or measure_step_seconds(arch, recipe, device, steps=2, warmup=1)
    passes = {split: forward_passes(split_options(erasure, split)) for split in SPLITS}
    plan = StagePlan(arch, describe(device), recipe.batch_size, recipe.epochs, recipe.epochs, dict(images), step,
                     measure_pass_seconds(arch, recipe, erasure, device), passes)
    return plan if budget_seconds is None else fit_epochs(plan, budget_seconds)


def fit_epochs(plan: StagePlan, budget_seconds: float) -> StagePlan:
    """The plan with as many of its recipe's epochs as fit the budget beside the erasure study, at least one."""
    affordable = math.floor((budget_seconds - plan.erasure_seconds - OVERHEAD_SECONDS) / plan.epoch_seconds)
    return replace(plan, epochs=max(1, min(plan.recipe_epochs, affordable)), budget_seconds=budget_seconds)


def plan_table(plans: list[StagePlan], budget_seconds: float | None) -> str:
    """The dry run's table: per stage the planned epochs and the estimated device time, in seconds and minutes."""
    lines = ["| stage | batch | epochs (recipe) | s/step | steps/epoch | train s | erasure passes/image (test/val) | "
             "erasure s | "
             "stage s | stage min | budget s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in plans:
        budget = "-" if p.budget_seconds is None else f"{p.budget_seconds:.0f}"
        over = " (over)" if p.budget_seconds is not None and p.total_seconds > p.budget_seconds else ""
        lines.append(f"| {p.model or p.arch} | {p.batch_size} | {p.epochs} ({p.recipe_epochs}) | "
                     f"{p.step_seconds:.3f} | {p.steps_per_epoch} | {p.epochs * p.epoch_seconds:.0f} | "
                     f"{p.erasure_passes['test']}/{p.erasure_passes['val']} | {p.erasure_seconds:.0f} | "
                     f"{p.total_seconds:.0f} | "
                     f"{p.total_seconds / 60:.1f} | {budget}{over} |")
    total = sum(p.total_seconds for p in plans)
    devices = sorted({p.device for p in plans})
    lines += ["", f"estimated device time: {total:.0f} s ({total / 60:.1f} min) in all, measured on "
                  f"{', '.join(devices)}; the estimate holds for that device only"]
    lines.append("erasure passes/image: forward passes per image of the erasure study on the test and validation "
                 "splits (every anchor kind, saliency method, setting, fill and control draw, and the saliency maps; "
                 "the cost the sweep adds)")
    if budget_seconds is not None:
        lines.append(f"budget: {budget_seconds:.0f} s, shared among the stages in order; epochs cut to fit each "
                     "share, at least one; (over): beyond its share even so")
    return "\n".join(lines) + "\n"
