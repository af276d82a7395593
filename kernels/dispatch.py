"""The erasure op's public entry points: the Triton kernel for CUDA tensors, the reference elsewhere."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from miscause.kernels.reference import erase_from_gradient_reference, erase_reference
from miscause.kernels.triton_erase import erase_from_gradient_triton, erase_triton


def erase(
    images: torch.Tensor,
    saliency: torch.Tensor,
    top_percent: float,
    box: int,
    fill: Sequence[float] | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Erase a `box`-sided square around each of every image's top `top_percent`% saliency pixels.

    images [N, C, H, W] float32|float16|bfloat16, saliency [N, H, W] -> (erased like images, mask [N, H, W]
    bool). `fill` is one value per channel (default 0, the dataset mean in normalised space).
    """
    if isinstance(images, torch.Tensor) and images.is_cuda:
        return erase_triton(images, saliency, top_percent, box, fill)
    return erase_reference(images, saliency, top_percent, box, fill)


def erase_from_gradient(
    images: torch.Tensor,
    gradient: torch.Tensor,
    top_percent: float,
    box: int,
    fill: Sequence[float] | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`erase` with saliency = max over channels of |gradient|, gradient [N, C', H, W] read once, reduced in place."""
    if isinstance(images, torch.Tensor) and images.is_cuda:
        return erase_from_gradient_triton(images, gradient, top_percent, box, fill)
    return erase_from_gradient_reference(images, gradient, top_percent, box, fill)
