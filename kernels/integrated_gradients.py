"""Integrated gradients (Sundararajan et al., 2017): the input gradient integrated along the straight path
from a baseline image to the image, times the difference between the two.

The integral is a quadrature over `n_steps` points of the path, by default Gauss-Legendre, as Captum's
`IntegratedGradients` does; its left, right and midpoint Riemann sums are offered under the same names (not its
`riemann_trapezoid`, whose weights sum to (n - 1) / n). The default baseline 0 is
the dataset mean in normalised space. The path points are differentiated in chunks of whole steps, at most
`internal_batch_size` images per forward and backward pass (at least one step), so memory stays bounded.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from miscause.kernels.gradients import Target, check_images, classes_of, clean_logits, input_gradient, per_pixel

_INTEGRATIONS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle")


def _integration_points(n_steps: int, integration: str = "gausslegendre") -> tuple[list[float], list[float]]:
    """(positions in [0, 1] along the path, their weights) of the quadrature rule, as Captum computes them
    (the Riemann positions in float32, so the path's points are the same to the last bit)."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
    if integration not in _INTEGRATIONS:
        raise ValueError(f"unknown integration {integration!r}; choose one of {', '.join(_INTEGRATIONS)}")
    if integration == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return list(0.5 * (1 + nodes)), list(0.5 * weights)
    start = {"riemann_left": 0.0, "riemann_right": 1 / n_steps, "riemann_middle": 1 / (2 * n_steps)}[integration]
    return torch.linspace(start, start + 1 - 1 / n_steps, n_steps).tolist(), [1 / n_steps] * n_steps


def integrated_gradients(model: nn.Module, images: torch.Tensor, target: Target = None,
                         baseline: float | torch.Tensor = 0.0, n_steps: int = 50,
                         integration: str = "gausslegendre",
                         internal_batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(map [N, H, W] float32: max over channels of |attribution|, logits [N, K] float32 of the images)."""
    check_images(images)
    alphas, weights = _integration_points(n_steps, integration)
    if isinstance(internal_batch_size, bool) or not isinstance(internal_batch_size, int) or internal_batch_size < 1:
        raise ValueError(f"internal_batch_size must be an integer >= 1, got {internal_batch_size!r}")
    try:
        start = torch.as_tensor(baseline, dtype=images.dtype, device=images.device).expand_as(images)
    except RuntimeError:
        shape = list(torch.as_tensor(baseline).shape)
        raise ValueError(f"baseline of shape {shape} does not broadcast to the images {list(images.shape)}") from None
    logits = clean_logits(model, images)
    classes = classes_of(target, logits)
    difference = images - start
    total = torch.zeros_like(images)
    chunk = max(1, internal_batch_size // len(images))
    for first in range(0, n_steps, chunk):
        steps = range(first, min(first + chunk, n_steps))
        path = torch.cat([start + float(alphas[step]) * difference for step in steps])
        grad, _ = input_gradient(model, path, classes.repeat(len(steps)))
        step_weights = torch.tensor([weights[step] for step in steps], dtype=grad.dtype, device=grad.device)
        total += (grad.view(len(steps), *images.shape) * step_weights.view(-1, 1, 1, 1, 1)).sum(dim=0)
    return per_pixel(total * difference), logits
