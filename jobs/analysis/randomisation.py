"""The model-randomisation sanity check (Adebayo et al., 2018): does a saliency method's map depend on what
the model learned?

The maps of the trained model are compared with those of a copy whose weights are all re-initialised at once
(not cascading layer by layer): every weight tensor of two or more dimensions (convolution and linear kernels)
redrawn as PyTorch's default initialiser draws it, Kaiming-uniform with a = sqrt(5); biases, normalisation
parameters and running statistics are kept. Both explain the same class, the trained model's prediction
unless a target is given. The measure is the Spearman rank correlation of each image's two maps: near 1 means
the map ignores the weights (it would look the same for any model); a method that explains the model gives a
low one. A map that is constant over an image has no ranks: its correlation is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from miscause import kernels
from miscause.kernels.gradients import Target, clean_logits

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
            return kernels.saliency(model, images, name, classes, **options)[0]

    classes = clean_logits(model, images).argmax(dim=1) if target is None else target
    trained = method(model, images, classes)
    with randomised(model, seed):
        return rank_correlations(trained, method(model, images, classes))
