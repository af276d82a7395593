"""The model-randomisation sanity check (Adebayo et al., 2018): does a saliency method's map depend on what
the model learned?

The maps of the trained model are compared with those of a copy whose weights are all re-initialised at once
(not cascading layer by layer): every weight tensor of two or more dimensions (convolution and linear kernels)
redrawn as PyTorch's default initialiser draws it, Kaiming-uniform with a = sqrt(5); biases, normalisation
parameters and running statistics are kept. Both explain the same class, the trained model's prediction
unless a target is given. The measure is the Spearman rank correlation of each image's two maps: near 1 means
the map ignores the weights (it would look the same for any model); a method that explains the model gives a
low one. A map that is constant over an image has no ranks: its correlation is NaN. SmoothGrad's noise is
drawn from `seed` afresh for each model, so both see the same noisy copies and only the weights differ.

`randomisation_study` runs the check for every method a repository model offers on a seeded subset of images,
in batches; `summarize_randomisation` gives the report's figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from miscause import kernels
from miscause.jobs.analysis.erasure.curves import curve_rows
from miscause.jobs.analysis.inputs.repository_model import RepositoryModel
from miscause.kernels import Target, clean_logits

SANITY_THRESHOLD = 0.5  # a median correlation at least this high: the method does not explain the model
WEIGHTS = "every weight tensor of two or more dimensions, re-initialised at once"

MapFunction = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # (model, images, classes) -> [N,H,W]


@contextmanager
def randomised(model: nn.Module, seed: int = 0) -> Iterator[nn.Module]:
    """`model` with every weight tensor (two or more dimensions) re-initialised, seeded, for the block; the
    trained weights restored after. In place, because an exported program's module cannot be deep-copied."""
    weights = [parameter for parameter in model.parameters() if parameter.dim() >= 2]
    trained = [weight.detach().clone() for weight in weights]
    generator = torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():
            for weight in weights:
                bound = 1 / math.sqrt(weight[0].numel())  # kaiming_uniform_(a=sqrt(5)): sqrt(6 / 6 / fan_in)
                drawn = torch.rand(weight.shape, generator=generator) * 2 * bound - bound
                weight.copy_(drawn)
        yield model
    finally:
        with torch.no_grad():
            for weight, value in zip(weights, trained, strict=True):
                weight.copy_(value)


def rank_correlations(first: torch.Tensor, second: torch.Tensor) -> np.ndarray:
    """Spearman rank correlation [N] of each image's two maps ([N, H, W] each; ties share their mean rank)."""
    if first.shape != second.shape or first.dim() != 3:
        raise ValueError(f"need two [N, H, W] maps of one shape, got {list(first.shape)} and {list(second.shape)}")
    ranks = [rankdata(maps.detach().cpu().double().reshape(len(maps), -1).numpy(), axis=1) for maps in (first, second)]
    a, b = (r - r.mean(axis=1, keepdims=True) for r in ranks)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))


def randomisation_check(model: nn.Module, images: torch.Tensor, method: str | MapFunction, target: Target = None,
                        seed: int = 0, **options: object) -> np.ndarray:
    """Spearman correlation [N] between each image's map from the trained `model` and from its randomised copy.

    `method` is one of `miscause.kernels.METHODS` (with its `options`) or a function (model, images, classes)
    returning [N, H, W] maps."""
    if isinstance(method, str):
        if method not in kernels.METHODS:
            raise ValueError(f"unknown saliency method {method!r}; choose one of {', '.join(kernels.METHODS)}")
        name = method

        def method(model: nn.Module, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
            noise = {"generator": torch.Generator(images.device).manual_seed(seed)} if name == "smoothgrad" else {}
            return kernels.saliency(model, images, name, classes, **{**noise, **options})[0]

    classes = clean_logits(model, images).argmax(dim=1) if target is None else target
    trained = method(model, images, classes)
    with randomised(model, seed):
        return rank_correlations(trained, method(model, images, classes))


@dataclass
class Randomisation:
    """One model's check: the `rows` of the test images it used, the weights' `seed`, and per saliency method
    the Spearman correlation [rows] of each image's trained and randomised maps."""

    rows: np.ndarray
    seed: int
    correlations: dict[str, np.ndarray]


def randomisation_study(model: RepositoryModel, images: np.ndarray, count: int, batch_size: int, seed: int,
                        device: torch.device) -> Randomisation | None:
    """The check of every saliency method `model` offers on up to `count` of the uint8 images [N,H,W,3] (drawn
    with the seed as the curves draw theirs), `batch_size` at a time; None when `count` is 0."""
    if count == 0:
        return None
    rows = curve_rows(len(images), count, seed)
    methods = [method for method in kernels.METHODS if model.config.offers(method)]
    parts: dict[str, list[np.ndarray]] = {method: [] for method in methods}
    for begin in range(0, len(rows), batch_size):
        x = model.prepare(images[rows[begin:begin + batch_size]], device)
        for method in methods:
            parts[method].append(randomisation_check(model.module, x, method, seed=seed,
                                                     **model.config.saliency_options(method)))
    return Randomisation(rows, seed, {method: np.concatenate(arrays) if arrays else np.zeros(0)
                                      for method, arrays in parts.items()})


def summarize_randomisation(check: Randomisation) -> dict[str, dict]:
    """Per method: the images, the median Spearman correlation and its quartiles over the images whose maps
    have ranks, and how many have none (NaN: a constant map)."""
    summary = {}
    for method, values in check.correlations.items():
        ranked = values[np.isfinite(values)]
        quartiles = np.percentile(ranked, [25, 50, 75]) if len(ranked) else [None] * 3
        summary[method] = {"images": len(values), "seed": check.seed, "median": quartiles[1],
                           "quartiles": [quartiles[0], quartiles[2]],
                           "iqr": quartiles[2] - quartiles[0] if len(ranked) else None,
                           "nan": int(len(values) - len(ranked))}
    return summary


def randomisation_summaries(checks: dict[str, Randomisation | None]) -> dict[str, dict] | None:
    """Per model that ran the check, its summary; None when none did."""
    summaries = {name: summarize_randomisation(check) for name, check in checks.items() if check is not None}
    return summaries or None
