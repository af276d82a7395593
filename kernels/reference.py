"""The erasure op in plain PyTorch: the executable form of the spec, and the CPU serving path.

Every step is a whole-batch tensor operation (no per-image loop), so it runs on CPU or GPU and under
torch.compile; the Triton kernel is tested against it. `erase_core` is the op after the argument checks, which
`miscause bench kernels` compiles with torch.compile.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from miscause.kernels.erase_spec import EraseArgs, EraseResult, check_erase_args, ranking_name


def erase_reference_unchecked(
    images: torch.Tensor,
    ranking: torch.Tensor,
    top_percent: float,
    box: int,
    fill: Sequence[float] | torch.Tensor | None = None,
    *,
    from_gradient: bool = False,
) -> EraseResult:
    """The op with its per-image status (NaN/Inf count, anchor count) left for the caller to check.

    `ranking` is the saliency [N, H, W], or with `from_gradient` the raw gradient [N, C', H, W]. Images with
    NaN/Inf ranking values get unspecified outputs, as from the Triton kernel.
    """
    name = ranking_name(from_gradient)
    args = check_erase_args(images, ranking, top_percent, box, fill, saliency_name=name, per_channel=from_gradient)
    erased, mask, anchors = erase_core(images, ranking.abs().amax(dim=1) if from_gradient else ranking, args)
    nonfinite = (~torch.isfinite(ranking.flatten(1))).sum(dim=1, dtype=torch.int32)
    return EraseResult(erased, mask, nonfinite, anchors, args.k, name)


def erase_core(images: torch.Tensor, saliency: torch.Tensor,
               args: EraseArgs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The op on checked arguments: (erased, mask, anchors per image) from the anchors, their boxes and the fill."""
    n, c, h, w = images.shape
    anchors = _anchor_mask(saliency, args.k)
    mask = _dilate(anchors, args.radius)
    fill = args.fill.to(images.dtype).view(1, c, 1, 1)
    return torch.where(mask.unsqueeze(1), fill, images), mask, anchors.flatten(1).sum(dim=1, dtype=torch.int32)


def _anchor_mask(saliency: torch.Tensor, k: int) -> torch.Tensor:
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


def _dilate(anchors: torch.Tensor, radius: int) -> torch.Tensor:
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
