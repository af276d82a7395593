"""The named designs of `miscause study --design NAME`: the architectures and seeds a stage-only study trains,
each architecture's epochs (its recipe gives the rest of the schedule), the seeds whose stages run the erasure
study's sweep (and which sweep, where it is narrower than the full one), and where the result files go.

`cpu`: four architecture families, three seeds each, on this project's 2-core CPU. The epochs were planned from
the step times `study --dry-run` measured on the quiet machine (docs/study.md), each to train in at most about
25 minutes; the accuracy they reach is what the result files state. The sweep seed's sweep is narrowed to what
the CPU affords (p 1, 5, 20 by b 1, 3, every fill, the gradient alone); integrated gradients and Grad-CAM are
left to the GPU study (each a saliency pass of 50 gradients, or a sweep of its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class Design:
    """A stage-only study fixed in advance: one stage per architecture and seed."""

    archs: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: dict[str, int]  # per architecture: its recipe's batch size, learning rate and schedule, these epochs
    sweep_seeds: tuple[int, ...]  # their stages run the sweep; the others the default setting only
    results: Path  # the result files' folder, relative to the working directory
    sweep: dict[str, tuple] = field(default_factory=dict)  # defaults of the sweep options (the sweep seeds run them)


DESIGNS: dict[str, Design] = {
    "cpu": Design(
        archs=("cifarnet", "resnet18", "vgg16_bn_half", "mobilenet_v2_half"),
        seeds=(0, 1, 2),
        epochs={"cifarnet": 6, "resnet18": 5, "vgg16_bn_half": 9, "mobilenet_v2_half": 10},
        sweep_seeds=(0,),
        results=Path("docs/study-cpu/results"),
        sweep={"sweep_top_percent": (1.0, 5.0, 20.0), "sweep_box": (1, 3), "sweep_methods": ("gradient",)},
    ),
}

