"""Cascading model randomisation (Adebayo et al., 2018): does a saliency method's map depend on what the model
learned, layer by layer?

The model's blocks are re-initialised from the top (the logits) down, cumulatively, one block per step, until all
are random. A layer is a module with a weight of two or more dimensions (a convolution or a linear map), with the
normalisation modules that follow it; a block is the consecutive layers whose module paths share their first two
components below the network's root (a residual block `layer1.0`, a stage `features.3`, the head `fc`). A layer's
weight is redrawn as PyTorch's default initialiser draws it (Kaiming-uniform with a = sqrt(5), bound 1 /
sqrt(fan_in)) and so is its bias (uniform within the same bound); its normalisation modules are reset as a fresh
one starts: scale 1, shift 0, running mean 0, running variance 1. Reset rather than re-estimated: an exported
program runs in eval mode only, so no forward pass can gather batch statistics, and reset statistics are what a
re-initialised network has. The weights are drawn from `seed` the same way for every batch and method, and the
trained state is restored afterwards.

At each step the map of the trained model's predicted class is compared with the trained map, per image, by
the Spearman rank correlation of the absolute maps and by SSIM (Wang et al., 2004; scikit-image's
`structural_similarity`, data range 1) of the absolute maps scaled to [0, 1]. A map that is constant over the
image has no ranks and no scale: its scores are NaN, counted in the summaries. A method that explains the model
loses its similarity as more layers are randomised; a map that ignores the weights stays at 1.

The reference for "different" is the similarity of two trained seeds of one architecture on the same images
(`reference`): the trained maps of the first `REFERENCE_IMAGES` images are kept for it. SmoothGrad's noise is
drawn afresh for every model, so all see the same noisy copies and only the weights differ. Every model is checked
with the same `CHECK_SEED` (its images, the re-initialised weights, the noise), whatever seed it was trained or
analysed with, so the seeds of one architecture are compared on the same images.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata
from skimage.metrics import structural_similarity
from torch import nn

from miscause import kernels
from miscause.jobs.analysis.erasure.curves import curve_rows
from miscause.jobs.analysis.erasure.paired import MeanDifference, MeanInterval, mean_difference, mean_interval
from miscause.jobs.analysis.inputs.repository_model import RepositoryModel
from miscause.kernels import Target, clean_logits

MEASURES = ("spearman", "ssim")
CHECK_SEED = 0  # the check's images, weights and noise: the same for every model, so seeds can be compared
REFERENCE_IMAGES = 16  # trained maps kept per method for the seed-to-seed reference (float16, 32x32: 2 KB each)
NORMALISATION_BUFFERS = {"running_mean": 0.0, "running_var": 1.0}
NORMALISATION_PARAMETERS = {"weight": 1.0, "bias": 0.0}

MapFunction = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # (model, images, classes) -> [N,H,W]


@dataclass(frozen=True)
class Layer:
    """One cascade step: the block `name`, its modules holding a weight (`weights`) and the normalisation modules
    after each of them."""

    name: str
    weights: tuple[nn.Module, ...]
    normalisations: tuple[nn.Module, ...]


def block_of(name: str, prefix: str) -> str:
    """The block a layer's module path belongs to: its first two components below the network's root `prefix`
    (`layer1.0` of `layer1.0.conv1`, `features.3` of `features.3.conv.0.0`, `head` of `head`)."""
    return ".".join(name.removeprefix(prefix).split(".")[:2])


def cascade_layers(model: nn.Module) -> list[Layer]:
    """The model's blocks from the top (the logits) down. A layer is a module holding a weight of two or more
    dimensions, with the parameterised or running-statistics modules (batch normalisation) registered after it
    and before the next layer; consecutive layers whose paths share their first two components below the root
    form one block (a residual block, a numbered stage, a head), so a deep network has tens of steps, not
    hundreds."""
    found: list[tuple[str, nn.Module, list[nn.Module]]] = []
    for name, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        buffers = dict(module.named_buffers(recurse=False))
        if any(parameter.dim() >= 2 for parameter in own.values()):
            found.append((name, module, []))
        elif found and (own or NORMALISATION_BUFFERS.keys() & buffers.keys()):
            found[-1][2].append(module)
    names = [name for name, _, _ in found]
    root = names[0].rsplit(".", 1)[0] + "." if len(names) == 1 and "." in names[0] else ""
    if len(names) > 1:
        common = os.path.commonprefix([name.split(".") for name in names])
        root = "".join(f"{part}." for part in common)
    blocks: list[tuple[str, list[nn.Module], list[nn.Module]]] = []
    for name, module, norms in found:
        block = block_of(name, root)
        if not blocks or blocks[-1][0] != block:
            blocks.append((block, [], []))
        blocks[-1][1].append(module)
        blocks[-1][2].extend(norms)
    return [Layer(name, tuple(weights), tuple(norms)) for name, weights, norms in reversed(blocks)]


def _state(layers: list[Layer]) -> list[torch.Tensor]:
    """Every parameter and buffer the layers own (not their children's)."""
    modules = [module for layer in layers for module in (*layer.weights, *layer.normalisations)]
    return [tensor for module in modules
            for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False))]


@contextmanager
def restored(layers: list[Layer]) -> Iterator[None]:
    """The layers' trained parameters and buffers put back after the block, whatever it changed. In place,
    because an exported program's module cannot be deep-copied."""
    tensors = _state(layers)
    trained = [tensor.detach().clone() for tensor in tensors]
    try:
        yield
    finally:
        with torch.no_grad():
            for tensor, value in zip(tensors, trained, strict=True):
                tensor.copy_(value)


@torch.no_grad()
def randomise_layer(layer: Layer, generator: torch.Generator) -> None:
    """Re-initialise one block as PyTorch initialises fresh layers: each weight and bias uniform within
    1 / sqrt(fan_in) of its module (Kaiming-uniform, a = sqrt(5)), drawn from `generator` on the CPU; its
    normalisation modules' scale 1, shift 0, running mean 0 and running variance 1."""
    for module in layer.weights:
        parameters = dict(module.named_parameters(recurse=False))
        fan_in = max(parameter[0].numel() for parameter in parameters.values() if parameter.dim() >= 2)
        bound = 1 / math.sqrt(fan_in)
        for parameter in parameters.values():
            drawn = torch.rand(parameter.shape, generator=generator, dtype=torch.float64) * 2 * bound - bound
            parameter.copy_(drawn.to(parameter.dtype))
    for module in layer.normalisations:
        for name, tensor in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)):
            value = {**NORMALISATION_PARAMETERS, **NORMALISATION_BUFFERS}.get(name)
            if value is not None:
                tensor.fill_(value)


def rank_correlations(first: torch.Tensor | np.ndarray, second: torch.Tensor | np.ndarray) -> np.ndarray:
    """Spearman rank correlation [N] of each image's two absolute maps ([N, H, W] each; ties share their mean
    rank; NaN where a map is constant)."""
    a, b = (_absolute(maps) for maps in (first, second))
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"need two [N, H, W] maps of one shape, got {list(a.shape)} and {list(b.shape)}")
    ranks = [rankdata(maps.reshape(len(maps), -1), axis=1) for maps in (a, b)]
    x, y = (r - r.mean(axis=1, keepdims=True) for r in ranks)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x * y).sum(axis=1) / np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))


def structural_similarities(first: torch.Tensor | np.ndarray, second: torch.Tensor | np.ndarray) -> np.ndarray:
    """SSIM [N] of each image's two absolute maps, each scaled to [0, 1] by its own minimum and maximum
    (scikit-image, data range 1, its default 7 x 7 window); NaN where a map is constant."""
    a, b = (_unit(_absolute(maps)) for maps in (first, second))
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"need two [N, H, W] maps of one shape, got {list(a.shape)} and {list(b.shape)}")
    return np.array([structural_similarity(x, y, data_range=1.0) if np.isfinite(x).all() and np.isfinite(y).all()
                     else np.nan for x, y in zip(a, b, strict=True)])


def _absolute(maps: torch.Tensor | np.ndarray) -> np.ndarray:
    values = maps.detach().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps)
    return np.abs(values.astype(np.float64))


def _unit(maps: np.ndarray) -> np.ndarray:
    """Each map scaled to [0, 1]; a constant map becomes NaN."""
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), np.nan)


def map_function(method: str | MapFunction, seed: int, **options: object) -> MapFunction:
    """`method` as a function (model, images, classes) -> [N, H, W]: one of `miscause.kernels.METHODS` with its
    `options` (SmoothGrad's noise drawn from `seed` afresh on every call), or the function itself."""
    if not isinstance(method, str):
        return method
    if method not in kernels.METHODS:
        raise ValueError(f"unknown saliency method {method!r}; choose one of {', '.join(kernels.METHODS)}")

    def maps(model: nn.Module, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        noise = {"generator": torch.Generator(images.device).manual_seed(seed)} if method == "smoothgrad" else {}
        return kernels.saliency(model, images, method, classes, **{**noise, **options})[0]

    return maps


@dataclass(kw_only=True)
class CascadeScores:
    """One batch's cascade for one method: the trained maps [N, H, W] and per step (the layers of `layers`
    randomised, cumulatively, top down) each image's Spearman and SSIM against them ([L, N] each)."""

    trained: np.ndarray
    spearman: np.ndarray
    ssim: np.ndarray


def cascade_check(model: nn.Module, images: torch.Tensor, method: str | MapFunction, layers: list[Layer] | None = None,
                  target: Target = None, seed: int = 0, **options: object) -> CascadeScores:
    """The cascading check of `method` on one batch of normalised images: the layers (default: all of
    `cascade_layers(model)`) re-initialised one more at a time from the top, seeded, the trained state restored
    after. Every map is of the trained model's predicted class (or `target`)."""
    layers = cascade_layers(model) if layers is None else layers
    maps = map_function(method, seed, **options)
    classes = clean_logits(model, images).argmax(dim=1) if target is None else target
    trained = maps(model, images, classes).detach()
    spearman, ssim = [], []
    with restored(layers):
        generator = torch.Generator().manual_seed(seed)
        for layer in layers:
            randomise_layer(layer, generator)
            randomised = maps(model, images, classes).detach()
            spearman.append(rank_correlations(trained, randomised))
            ssim.append(structural_similarities(trained, randomised))
    empty = np.zeros((0, len(images)))
    return CascadeScores(trained=trained.cpu().float().numpy(), spearman=np.stack(spearman) if spearman else empty,
                         ssim=np.stack(ssim) if ssim else empty)


@dataclass(kw_only=True)
class Randomisation:
    """One model's cascading check: the test `rows` it used, the weights' `seed`, the `layers` in cascade order
    (top down) and per saliency method each image's Spearman and SSIM per step ([L, rows], float32, NaN: a
    constant map), and the trained maps of the first `REFERENCE_IMAGES` rows (float16 [r, H, W]) for the
    seed-to-seed reference."""

    rows: np.ndarray
    seed: int
    layers: tuple[str, ...]
    spearman: dict[str, np.ndarray]
    ssim: dict[str, np.ndarray]
    maps: dict[str, np.ndarray]


def randomisation_study(model: RepositoryModel, images: np.ndarray, count: int, batch_size: int,
                        device: torch.device) -> Randomisation | None:
    """The cascading check of every saliency method `model` offers on up to `count` of the uint8 images
    [N,H,W,3] (drawn with `CHECK_SEED` as the curves draw theirs), `batch_size` at a time; None when `count` is 0."""
    if count == 0:
        return None
    rows = curve_rows(len(images), count, CHECK_SEED)
    layers = cascade_layers(model.module)
    methods = [method for method in kernels.METHODS if model.config.offers(method)]
    parts: dict[str, list[CascadeScores]] = {method: [] for method in methods}
    for begin in range(0, len(rows), batch_size):
        x = model.prepare(images[rows[begin:begin + batch_size]], device)
        for method in methods:
            parts[method].append(cascade_check(model.module, x, method, layers, seed=CHECK_SEED,
                                               **model.config.saliency_options(method)))

    def joined(method: str, key: str, axis: int) -> np.ndarray:
        return np.concatenate([getattr(part, key) for part in parts[method]], axis=axis)

    return Randomisation(rows=rows, seed=CHECK_SEED, layers=tuple(layer.name for layer in layers),
                         spearman={m: joined(m, "spearman", 1).astype(np.float32) for m in methods},
                         ssim={m: joined(m, "ssim", 1).astype(np.float32) for m in methods},
                         maps={m: joined(m, "trained", 0)[:REFERENCE_IMAGES].astype(np.float16) for m in methods})


@dataclass(frozen=True, kw_only=True)
class CascadeStep:
    """One step of the cascade: the `layer` randomised at it (with every layer above), the similarity to the
    trained map per measure, and per measure the reference's similarity minus this step's on the reference
    images (one-sided: the step's maps are less alike than two trained seeds'), None without a reference."""

    layer: str
    similarity: dict[str, MeanInterval]
    below_reference: dict[str, MeanDifference] | None


@dataclass(frozen=True, kw_only=True)
class MethodCascade:
    """One method's cascade, top layer first (the last step: all layers random), and the seed-to-seed reference
    per measure (None without one)."""

    steps: list[CascadeStep]
    reference: dict[str, MeanInterval] | None


@dataclass(frozen=True, kw_only=True)
class ModelRandomisation:
    """One model's check as the report shows it: images, seed, the models its reference compares it with (its
    replicate group's other seeds; empty: no reference) and on how many images, and per method the cascade."""

    images: int
    seed: int
    reference_models: tuple[str, ...]
    reference_images: int
    methods: dict[str, MethodCascade]


def seed_similarity(check: Randomisation, partners: list[Randomisation], method: str) -> dict[str, np.ndarray]:
    """Per measure, each reference image's similarity between this model's trained map and another seed's,
    averaged over the `partners` (NaN where a map is constant)."""
    own = check.maps[method].astype(np.float64)
    scores = {"spearman": [], "ssim": []}
    for partner in partners:
        other = partner.maps[method].astype(np.float64)
        scores["spearman"].append(rank_correlations(own, other))
        scores["ssim"].append(structural_similarities(own, other))
    return {measure: np.mean(values, axis=0) for measure, values in scores.items()}


def comparable(check: Randomisation, other: Randomisation, method: str) -> bool:
    """Whether two checks ran `method` on the same images (a reference needs them)."""
    return (method in other.maps and np.array_equal(check.rows, other.rows)
            and check.maps[method].shape == other.maps[method].shape)


def summarize_randomisation(check: Randomisation, partners: dict[str, Randomisation]) -> ModelRandomisation:
    """Per method and step: the mean similarity with its 95% interval and the constant maps counted; with
    other seeds of the architecture (`partners`, by name), the seed-to-seed reference and each step's paired
    difference from it."""
    methods = {}
    used: set[str] = set()
    for method in check.spearman:
        group = {name: p for name, p in partners.items() if comparable(check, p, method)}
        used |= group.keys()
        reference = seed_similarity(check, list(group.values()), method) if group else None
        steps = []
        for step, layer in enumerate(check.layers):
            scores = {"spearman": check.spearman[method][step], "ssim": check.ssim[method][step]}
            below = None
            if reference is not None:
                below = {measure: mean_difference(reference[measure] - scores[measure][:len(reference[measure])],
                                                  "greater") for measure in MEASURES}
            steps.append(CascadeStep(layer=layer, similarity={m: mean_interval(scores[m]) for m in MEASURES},
                                     below_reference=below))
        methods[method] = MethodCascade(steps=steps, reference=None if reference is None else
                                        {m: mean_interval(reference[m]) for m in MEASURES})
    first = next(iter(check.maps.values()), np.zeros((0,)))
    return ModelRandomisation(images=len(check.rows), seed=check.seed, reference_models=tuple(sorted(used)),
                              reference_images=len(first) if used else 0, methods=methods)


ReplicateGroups = tuple[tuple[str, tuple[str, ...]], ...]  # (name, models), as AnalysisOptions.replicates


def randomisation_summaries(checks: dict[str, Randomisation | None],
                            groups: ReplicateGroups = ()) -> dict[str, ModelRandomisation] | None:
    """Per model that ran the check, its summary, referenced to the other seeds of its replicate group (`groups`:
    (name, models) pairs); None when no model ran it."""
    ran = {name: check for name, check in checks.items() if check is not None}
    group_of = {model: members for _, members in groups for model in members}
    summaries = {name: summarize_randomisation(check, {other: ran[other] for other in group_of.get(name, ())
                                                       if other != name and other in ran})
                 for name, check in ran.items()}
    return summaries or None
