"""Deletion and insertion curves (Petsiuk et al., 2018, RISE): how faithfully a saliency map ranks the pixels.

For each image, the pixels are ranked by a saliency map of the predicted class (most salient first; ties to the
smaller row-major index) or in a uniformly random order. Deletion: the image's pixels are replaced by the
study's fill in that order; insertion: the pixels are put back, in that order, into a canvas (by default the
blurred image). After each of `steps` equal steps (round(t/steps * pixels) pixels changed, t = 0..steps) the
probability of the originally predicted class is recorded. A faithful ranking makes deletion drop early and
insertion rise early: a small area under the deletion curve and a large one under the insertion curve. The
random order is the baseline every method must beat: per method and mode, the paired per-image difference of
the areas (method minus random, on the same images) has a 95% t interval and a one-sided t test in the faithful
direction (deletion: below 0; insertion: above 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from miscause import kernels
from miscause.jobs.analysis.erasure.fills import canvas, fill_masked
from miscause.jobs.analysis.erasure.paired import MeanDifference, mean_difference
from miscause.jobs.analysis.erasure.run import ErasureOptions
from miscause.jobs.analysis.inputs.repository_model import RepositoryModel

RANDOM = "random"
MODES = ("deletion", "insertion")
FAITHFUL = {"deletion": "less", "insertion": "greater"}  # the direction of a better area than the random order's
BETTER, NOT_SHOWN, WORSE = "better than random", "not shown better than random", "worse than random"


@dataclass
class Curves:
    """Per order (a saliency method, or `random`) and mode, the predicted class's probability [images, steps+1]
    of the test run's `rows`."""

    rows: np.ndarray
    steps: int
    probabilities: dict[str, dict[str, np.ndarray]]


def step_counts(pixels: int, steps: int) -> list[int]:
    """Pixels changed after each step: round(t * pixels / steps) for t = 0..steps, halves rounded up."""
    return [(2 * t * pixels + steps) // (2 * steps) for t in range(steps + 1)]


def ranks(values: torch.Tensor) -> torch.Tensor:
    """[N, H*W] rank of every pixel of [N,H,W] values, largest first, equal values by row-major index."""
    flat = values.flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    position = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, position)


def area(curve: np.ndarray) -> np.ndarray:
    """Area under curves [..., steps+1] sampled at equal steps over [0, 1] (trapezoid rule)."""
    steps = curve.shape[-1] - 1
    return (curve.sum(-1) - (curve[..., 0] + curve[..., -1]) / 2) / steps


def curve(model: RepositoryModel, start: torch.Tensor, end: torch.Tensor, rank: torch.Tensor,
          counts: list[int], target: torch.Tensor) -> np.ndarray:
    """[N, steps+1]: the probability of `target` as the pixels of rank below each count go from `start` to `end`."""
    shape = (start.shape[0], *start.shape[2:])
    out = []
    for count in counts:
        mixed = fill_masked(start, (rank < count).view(shape), end)
        probabilities = model.logits(mixed).softmax(1)
        out.append(probabilities.gather(1, target[:, None])[:, 0].cpu().numpy())
    return np.stack(out, axis=1)


def curve_rows(n: int, limit: int, seed: int) -> np.ndarray:
    """Which rows of a run the curves use: all, or `limit` drawn with the seed (sorted)."""
    if limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 2]).choice(n, limit, replace=False))


def compute_curves(model: RepositoryModel, images: np.ndarray, options: ErasureOptions,
                   device: torch.device) -> Curves | None:
    """The curves of up to `options.curve_images` of uint8 images [N,H,W,3] (drawn with the seed), for each of
    `options.curve_methods` and the random order, in batches; deletion fills with the study's fill. None when
    `curve_images` is 0."""
    if options.curve_images == 0:
        return None
    rows = curve_rows(len(images), options.curve_images, options.seed)
    order_generator = torch.Generator().manual_seed(options.seed)
    noise_generator = torch.Generator(device=device).manual_seed(options.seed)
    parts: dict[str, dict[str, list]] = {name: {mode: [] for mode in MODES}
                                         for name in (*options.curve_methods, RANDOM)}
    for begin in range(0, len(rows), options.batch_size):
        x = model.prepare(images[rows[begin:begin + options.batch_size]], device)
        target = model.logits(x).argmax(1)
        counts = step_counts(x.shape[2] * x.shape[3], options.curve_steps)
        ends = {"deletion": (x, canvas(x, options.fill, model.mean, model.std).expand_as(x)),
                "insertion": (canvas(x, options.insertion_canvas, model.mean, model.std).expand_as(x), x)}
        orders = {method: kernels.saliency(model.module, x, method, target, **model.config.saliency_options(method),
                                           **({"generator": noise_generator} if method == "smoothgrad" else {}))[0]
                  for method in options.curve_methods}
        orders[RANDOM] = torch.rand((x.shape[0], *x.shape[2:]), generator=order_generator).to(device)
        for name, values in orders.items():
            rank = ranks(values)
            for mode, (start, end) in ends.items():
                parts[name][mode].append(curve(model, start, end, rank, counts, target))
    empty = np.zeros((0, options.curve_steps + 1), np.float32)
    return Curves(rows, options.curve_steps, {name: {mode: np.concatenate(arrays) if arrays else empty
                                                     for mode, arrays in by_mode.items()}
                                              for name, by_mode in parts.items()})


@dataclass(frozen=True, kw_only=True)
class AgainstRandom:
    """One method's area against the random order's on the same images, one mode: the paired difference (method
    minus random) with its interval and one-sided test, and the `verdict` at level `alpha`: better than random
    (the test rejects), worse than random (the whole interval on the unfaithful side), or not shown better."""

    difference: MeanDifference
    alpha: float
    verdict: str


def against_random(method: np.ndarray, random: np.ndarray, mode: str, alpha: float) -> AgainstRandom:
    """The paired per-image comparison of a method's areas [C] with the random order's [C] in `mode`."""
    difference = mean_difference(method - random, FAITHFUL[mode])
    low, high = difference.ci95 or (None, None)
    worse = (low is not None and low > 0) if mode == "deletion" else (high is not None and high < 0)
    better = difference.p_value is not None and difference.p_value <= alpha
    verdict = BETTER if better else WORSE if worse else NOT_SHOWN
    return AgainstRandom(difference=difference, alpha=alpha, verdict=verdict)


@dataclass(frozen=True, kw_only=True, eq=False)
class CurveMean:
    """One order's curves in one mode: the mean curve [steps+1] and its area, over all the curve images and over
    the misclassified (None without images)."""

    curve: np.ndarray
    auc: float | None
    auc_errors: float | None


@dataclass(frozen=True, kw_only=True)
class CurveSummary:
    """The deletion and insertion curves of one model: how many images (and errors) and steps, per order and mode
    the mean curve and its areas, per method and mode its areas against the random order's, and what deletion
    fills with and insertion starts from."""

    images: int
    errors: int
    steps: int
    orders: dict[str, dict[str, CurveMean]]
    versus_random: dict[str, dict[str, AgainstRandom]]
    deletion_fill: str
    insertion_canvas: str


def summarize_curves(curves: Curves, wrong: np.ndarray, deletion_fill: str, insertion_canvas: str,
                     alpha: float = 0.05) -> CurveSummary:
    """Per order and mode: the mean curve and its area, over all the curve images and over the misclassified;
    per method and mode, its areas against the random order's (`versus_random`, on all the curve images)."""
    errors = wrong[curves.rows]
    orders = {name: {mode: CurveMean(curve=values.mean(0) if len(values) else np.zeros(curves.steps + 1),
                                     auc=float(area(values).mean()) if len(values) else None,
                                     auc_errors=float(area(values[errors]).mean()) if errors.any() else None)
                     for mode, values in by_mode.items()}
              for name, by_mode in curves.probabilities.items()}
    random = curves.probabilities.get(RANDOM)
    versus = {} if random is None else {
        name: {mode: against_random(area(values), area(random[mode]), mode, alpha) for mode, values in by_mode.items()}
        for name, by_mode in curves.probabilities.items() if name != RANDOM}
    return CurveSummary(images=len(curves.rows), errors=int(errors.sum()), steps=curves.steps, orders=orders,
                        versus_random=versus, deletion_fill=deletion_fill, insertion_canvas=insertion_canvas)
