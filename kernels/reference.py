"""The erasure op in plain PyTorch: the executable form of the spec, and the CPU serving path.

Every step is a whole-batch tensor operation (no per-image loop), so it runs on CPU or GPU and under
torch.compile; the Triton kernel is tested against it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

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
    """The op on checked arguments: anchors, their box dilation, and the fill."""
    n, c, h, w = images.shape
    mask = dilate(anchor_mask(saliency, args.k), args.radius)
    fill = args.fill.to(images.dtype).view(1, c, 1, 1)
    return torch.where(mask.unsqueeze(1), fill, images), mask


def anchor_mask(saliency: torch.Tensor, k: int) -> torch.Tensor:
    """[N, H, W] bool: each image's k largest saliency pixels, ties going to the smaller row-major index.

    The k-th largest value is the smallest of the top k; every pixel at or above it is an anchor unless
    more than k are, which takes ties at that value. Only those images are then resolved exactly: pixels
    above it, and of those equal to it the first `k - #above` in row-major order.
    """
    n, h, w = saliency.shape
    values = saliency.reshape(n, h * w).float()
    threshold = values.topk(k, dim=1, sorted=False).values.amin(dim=1, keepdim=True)
    anchors = values >= threshold
    tied_rows = (anchors.sum(dim=1) > k).nonzero().squeeze(1)
    if len(tied_rows):
        row_values, row_threshold = values[tied_rows], threshold[tied_rows]
        above, tied = row_values > row_threshold, row_values == row_threshold
        still_needed = k - above.sum(dim=1, keepdim=True)
        anchors[tied_rows] = above | (tied & (tied.cumsum(dim=1) <= still_needed))
    return anchors.view(n, h, w)


def dilate(anchors: torch.Tensor, radius: int) -> torch.Tensor:
    """[N, H, W] bool: pixels within Chebyshev distance `radius` of an anchor, the box clipped at the borders.

    The box is separable: a (2r+1)-wide OR along the rows, then along the columns.
    """
    flags = anchors.to(torch.uint8)
    return _window_any(_window_any(flags, radius, dim=2), radius, dim=1) > 0


def _window_any(flags: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """OR of `flags` over [i - radius, i + radius] along `dim`, false beyond the ends.

    With r zeros put in front, that is the OR over the 2r+1 entries starting at i, built by doubling the
    span (1, 2, 4, ...) and one overlapping last step: O(log r) passes for any box.
    """
    size = flags.shape[dim]
    radius = min(radius, size - 1)
    padding = list(flags.shape)
    padding[dim] = radius
    span = torch.cat([flags.new_zeros(padding), flags], dim=dim)
    length, covered = 2 * radius + 1, 1
    while covered < length:
        step = min(covered, length - covered)
        span = _or_ahead(span, step, dim)
        covered += step
    return span.narrow(dim, 0, size)


def _or_ahead(flags: torch.Tensor, step: int, dim: int) -> torch.Tensor:
    """flags[i] | flags[i + step] along `dim` (false beyond the end)."""
    result = flags.clone()
    size = flags.shape[dim]
    if step < size:
        result.narrow(dim, 0, size - step).bitwise_or_(flags.narrow(dim, step, size - step))
    return result


def _check_finite(values: torch.Tensor, name: str) -> None:
    """Raise ValueError when any value is NaN or Inf (one host sync)."""
    bad = ~torch.isfinite(values.flatten(1)).all(dim=1)
    images_hit = int(bad.sum())
    if images_hit:
        raise nonfinite_error(name, images_hit)
