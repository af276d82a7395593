"""The erasure op's public entry points: the Triton kernel for CUDA tensors, the reference elsewhere."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from miscause.kernels.erase_spec import EraseResult, checked
from miscause.kernels.reference import erase_reference_unchecked
from miscause.kernels.triton_erase import erase_triton_unchecked


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
    return checked(erase_unchecked(images, saliency, top_percent, box, fill))


def erase_from_gradient(
    images: torch.Tensor,
    gradient: torch.Tensor,
    top_percent: float,
    box: int,
    fill: Sequence[float] | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`erase` with saliency = max over channels of |gradient|, gradient [N, C', H, W] read once, reduced in place."""
    return checked(erase_unchecked(images, gradient, top_percent, box, fill, from_gradient=True))


def erase_unchecked(
    images: torch.Tensor,
    ranking: torch.Tensor,
    top_percent: float,
    box: int,
    fill: Sequence[float] | torch.Tensor | None = None,
    *,
    from_gradient: bool = False,
) -> EraseResult:
    """`erase` (or with `from_gradient`, `erase_from_gradient`) with its status left for `check_result`.

    On CUDA nothing is read back, so a caller erasing several groups checks them all in one host sync.
    """
    if isinstance(images, torch.Tensor) and images.is_cuda:
        return erase_triton_unchecked(images, ranking, top_percent, box, fill, from_gradient=from_gradient)
    return erase_reference_unchecked(images, ranking, top_percent, box, fill, from_gradient=from_gradient)
