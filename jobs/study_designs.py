"""The named designs of `miscause study --design NAME`: the architectures and seeds a stage-only study trains,
each architecture's epochs (its recipe gives the rest of the schedule), the seeds whose stages run the erasure
study's full sweep, and where the result files go.

`cpu`: four architecture families, three seeds each, on this project's 2-core CPU. The epochs were planned from
the training throughput measured there (`benchmarks/results/cpu-zoo/`, docs/study.md), each to train in at
most about 25 minutes on the quiet machine; the accuracy they reach is what the result files will state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class Design:
    """A stage-only study fixed in advance: one stage per architecture and seed."""

    archs: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: dict[str, int]  # per architecture: its recipe's batch size, learning rate and schedule, these epochs
    sweep_seeds: tuple[int, ...]  # their stages run the full sweep; the others the default setting only
    results: Path  # the result files' folder, relative to the working directory


DESIGNS: dict[str, Design] = {
    "cpu": Design(
        archs=("cifarnet", "resnet18", "vgg16_bn_half", "mobilenet_v2_half"),
        seeds=(0, 1, 2),
        epochs={"cifarnet": 12, "resnet18": 14, "vgg16_bn_half": 20, "mobilenet_v2_half": 30},
        sweep_seeds=(0,),
        results=Path("docs/study-cpu/results"),
    ),
}

