"""The erasure op in plain PyTorch: the executable form of the spec, and the CPU serving path.

Every step is a whole-batch tensor operation (no per-image loop), so it runs on CPU or GPU and under
torch.compile; the Triton kernel is tested against it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from miscause.kernels.erase_spec import EraseArgs, check_erase_args, nonfinite_error


def erase_reference(
    images: torch.Tensor,
    saliency: torch.Tensor,
    top_percent: float,
    box: int,
    fill: Sequence[float] | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Erase boxes of side `box` around each image's top `top_percent`% saliency pixels.

    images [N, C, H, W] float32|float16|bfloat16, saliency [N, H, W] -> (erased like images, mask [N, H, W] bool).
    """
    args = check_erase_args(images, saliency, top_percent, box, fill)
    _check_finite(saliency, "saliency")
    return erase_core(images, saliency, args)


def erase_from_gradient_reference(
    images: torch.Tensor,
    gradient: torch.Tensor,
    top_percent: float,
    box: int,
    fill: Sequence[float] | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`erase_reference` with saliency = max over channels of |gradient|, gradient [N, C', H, W]."""
    args = check_erase_args(images, gradient, top_percent, box, fill, saliency_name="gradient", per_channel=True)
    _check_finite(gradient, "gradient")
    return erase_core(images, gradient.abs().amax(dim=1), args)


def erase_core(images: torch.Tensor, saliency: torch.Tensor, args: EraseArgs) -> tuple[torch.Tensor, torch.Tensor]:
    """The op on checked arguments: anchors, their box dilation, and the fill. Free of host syncs."""
    n, c, h, w = images.shape
    mask = dilate(anchor_mask(saliency, args.k), args.radius)
    fill = args.fill.to(images.dtype).view(1, c, 1, 1)
    return torch.where(mask.unsqueeze(1), fill, images), mask


def anchor_mask(saliency: torch.Tensor, k: int) -> torch.Tensor:
    """[N, H, W] bool: each image's k largest saliency pixels, ties going to the smaller row-major index.

    The k-th largest value is found exactly with kthvalue; everything above it is an anchor, and of the
    pixels equal to it the first `k - #above` in row-major order are too.
    """
    n, h, w = saliency.shape
    values = saliency.reshape(n, h * w).float()
    threshold = values.kthvalue(h * w - k + 1, dim=1, keepdim=True).values
    above = values > threshold
    tied = values == threshold
    still_needed = k - above.sum(dim=1, keepdim=True)
    first_ties = tied & (tied.cumsum(dim=1) <= still_needed)
    return (above | first_ties).view(n, h, w)


def dilate(anchors: torch.Tensor, radius: int) -> torch.Tensor:
    """[N, H, W] bool: pixels within Chebyshev distance `radius` of an anchor, the box clipped at the borders.

    A max-pool with a (2r+1)-square window and -inf padding is exactly that dilation.
    """
    if radius == 0:
        return anchors
    pooled = F.max_pool2d(anchors.unsqueeze(1).float(), kernel_size=2 * radius + 1, stride=1, padding=radius)
    return pooled.squeeze(1) > 0


def _check_finite(values: torch.Tensor, name: str) -> None:
    """Raise ValueError when any value is NaN or Inf (one host sync)."""
    bad = ~torch.isfinite(values.flatten(1)).all(dim=1)
    images_hit = int(bad.sum())
    if images_hit:
        raise nonfinite_error(name, images_hit)
