"""The erasure op as one fused Triton kernel: exact top-k selection, box dilation and fill, one program per image.

Each program works through its image in two phases.

Selection (`_select_anchors`). Saliency values become uint32 keys whose unsigned order is their float order.
Radix select then fixes the k-th largest key one byte at a time, most significant first: each of four
passes builds a 256-bin histogram of the next byte over the pixels whose higher bytes match those chosen so
far, and keeps the byte at which the count from the top reaches the number of anchors still needed. If more
pixels equal that threshold than are still needed, one more pass counts the ties in row-major order to
find where they stop being anchors.
The result is a rule any pixel can evaluate on its own: anchor iff key > threshold, or key == threshold and
index < cut. That is the k largest, ties to the smaller index, with no sort and no scratch memory.

Dilation and fill (`_erase_bands`). The image is walked in bands of full rows, top to bottom. Within a band
a running count of anchors along each row, read at the two edges of a (2r+1)-wide window, says whether an
anchor lies within r columns in the same row; the cost is the same for any box. The same count down each
column of that result, plus the last such row above the band (carried from earlier bands) and the first
within r rows below it (a short look-ahead), gives the box: erased iff a row within r has an anchor within
r columns, which is the Chebyshev ball. The band is then written: the mask once, each channel read (erased
pixels are not even read) and written once.

Memory traffic: the images are read and written once and the mask written once. The saliency is read once
from DRAM; the selection passes and the look-ahead re-read it from cache while the program holds the image.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from miscause.kernels.erase_spec import EraseArgs, check_erase_args, nonfinite_error

# Row index standing for "no such row on this side": beyond any image side, yet far from int32 overflow.
FAR = tl.constexpr(1 << 24)

# Elements per tile: the selection chunk and the dilation band hold at most this many pixels.
TILE = 2048


@triton.jit
def _order_key(x):
    """uint32 key of a float32 whose unsigned order is the float order (negatives flipped, sign set on the rest).

    -0.0 is first made +0.0, because the two compare equal and must tie rather than rank.
    """
    bits = tl.where(x == 0.0, 0.0, x).to(tl.uint32, bitcast=True)
    return tl.where((bits >> 31) == 1, bits ^ 0xFFFFFFFF, bits | 0x80000000)


@triton.jit
def _is_nonfinite(x):
    """NaN or Inf, read from the exponent bits so no floating-point rewrite can fold the test away."""
    return (x.to(tl.uint32, bitcast=True) & 0x7F800000) == 0x7F800000


@triton.jit
def _load_saliency(saliency, offsets, valid, plane, C_SAL, FROM_GRADIENT: tl.constexpr):
    """float32 saliency at pixel offsets: the map itself, or max over C_SAL channels of |gradient| (NaN kept)."""
    value = tl.load(saliency + offsets, mask=valid, other=0.0).to(tl.float32)
    if FROM_GRADIENT:
        value = tl.abs(value)
        for c in range(1, C_SAL):
            channel = tl.load(saliency + c * plane + offsets, mask=valid, other=0.0).to(tl.float32)
            value = tl.maximum(value, tl.abs(channel), propagate_nan=tl.PropagateNan.ALL)
    return value


@triton.jit
def _select_anchors(saliency, nonfinite, plane, C_SAL, k, FROM_GRADIENT: tl.constexpr, BLOCK: tl.constexpr):
    """Radix select of the k-th largest key; returns (threshold, cut) defining the anchors (see module doc).

    Also stores the image's count of NaN/Inf saliency values at `nonfinite`, read during the first pass.
    """
    bins = tl.arange(0, 256)
    threshold = tl.zeros([], dtype=tl.uint32)
    needed = k
    for byte in tl.static_range(4):
        shift = 24 - 8 * byte
        histogram = tl.zeros([256], dtype=tl.int32)
        bad = tl.zeros([], dtype=tl.int32)
        for start in range(0, plane, BLOCK):
            offsets = start + tl.arange(0, BLOCK)
            valid = offsets < plane
            value = _load_saliency(saliency, offsets, valid, plane, C_SAL, FROM_GRADIENT)
            key = _order_key(value)
            if byte == 0:
                bad += tl.sum((valid & _is_nonfinite(value)).to(tl.int32), axis=0)
                live = valid
            else:
                live = valid & ((key >> (shift + 8)) == (threshold >> (shift + 8)))
            histogram += tl.histogram(((key >> shift) & 0xFF).to(tl.int32), 256, mask=live)
        if byte == 0:
            tl.store(nonfinite, bad)
        # at_least[d]: live pixels whose byte is >= d; the k-th largest has the largest d with at_least >= needed.
        at_least = tl.cumsum(histogram, axis=0, reverse=True)
        digit = tl.sum((at_least >= needed).to(tl.int32), axis=0) - 1
        needed -= tl.sum(tl.where(bins > digit, histogram, 0), axis=0)
        tied = tl.sum(tl.where(bins == digit, histogram, 0), axis=0)
        threshold = threshold | (digit.to(tl.uint32) << shift)
    cut = plane
    if tied > needed:
        seen = tl.zeros([], dtype=tl.int32)
        last = tl.zeros([], dtype=tl.int32)
        for start in range(0, plane, BLOCK):
            offsets = start + tl.arange(0, BLOCK)
            valid = offsets < plane
            key = _order_key(_load_saliency(saliency, offsets, valid, plane, C_SAL, FROM_GRADIENT))
            tie = valid & (key == threshold)
            rank = seen + tl.cumsum(tie.to(tl.int32), axis=0)
            last = tl.maximum(last, tl.max(tl.where(tie & (rank == needed), offsets + 1, 0), axis=0))
            seen += tl.sum(tie.to(tl.int32), axis=0)
        cut = last
    return threshold, cut


@triton.jit
def _window_any(flags, positions, radius, axis: tl.constexpr, SIZE: tl.constexpr):
    """Is any flag set within `radius` of each position along `axis` (inside the tile)?

    A prefix count along the axis, read at both window edges with gathers: the test costs the same for
    every radius.
    """
    count = tl.cumsum(flags.to(tl.int32), axis=axis)
    last = tl.broadcast_to(tl.minimum(positions + radius, SIZE - 1), count.shape)
    before = tl.broadcast_to(positions - radius - 1, count.shape)
    up_to_last = tl.gather(count, last, axis)
    before_first = tl.where(before >= 0, tl.gather(count, tl.maximum(before, 0), axis), 0)
    return up_to_last > before_first


@triton.jit
def _row_reach(saliency, rows, cols, row_limit, W, plane, C_SAL, threshold, cut, radius,
               FROM_GRADIENT: tl.constexpr, BLOCK_W: tl.constexpr):
    """[rows, cols] bool: an anchor lies in the same row within `radius` columns (rows >= row_limit: none)."""
    valid = (rows < row_limit) & (cols < W)
    offsets = rows * W + cols
    key = _order_key(_load_saliency(saliency, offsets, valid, plane, C_SAL, FROM_GRADIENT))
    anchor = valid & ((key > threshold) | ((key == threshold) & (offsets < cut)))
    return _window_any(anchor, cols, radius, 1, BLOCK_W)


@triton.jit
def _erase_bands(images, saliency, fill, erased, mask, C, C_SAL, H, W, threshold, cut, radius,
                 FROM_GRADIENT: tl.constexpr, BAND: tl.constexpr, BLOCK_W: tl.constexpr):
    """Walk the image in bands of BAND rows: dilate the anchors into the box mask, store it, fill the pixels."""
    plane = H * W
    cols = tl.arange(0, BLOCK_W)[None, :]
    band_rows = tl.arange(0, BAND)[:, None]
    # Per column: the last row above the current band holding a pixel that reaches an anchor along its row.
    last_above = tl.full([BLOCK_W], -FAR, dtype=tl.int32)
    for top in range(0, H, BAND):
        rows = top + band_rows
        reach = _row_reach(saliency, rows, cols, H, W, plane, C_SAL, threshold, cut, radius, FROM_GRADIENT,
                           BLOCK_W)
        # ... and the first such row below the band, looking at most `radius` rows ahead.
        look_end = tl.minimum(top + BAND + radius, H)
        first_below = tl.full([BLOCK_W], FAR, dtype=tl.int32)
        for ahead in range(top + BAND, look_end, BAND):
            ahead_rows = ahead + band_rows
            ahead_reach = _row_reach(saliency, ahead_rows, cols, look_end, W, plane, C_SAL, threshold, cut,
                                     radius, FROM_GRADIENT, BLOCK_W)
            first_below = tl.minimum(first_below, tl.min(tl.where(ahead_reach, ahead_rows, FAR), axis=0))
        in_box = (_window_any(reach, band_rows, radius, 0, BAND)
                  | (last_above[None, :] >= rows - radius) | (first_below[None, :] <= rows + radius))
        last_above = tl.maximum(last_above, tl.max(tl.where(reach, rows, -FAR), axis=0))

        valid = (rows < H) & (cols < W)
        offsets = rows * W + cols
        tl.store(mask + offsets, in_box.to(tl.uint8), mask=valid)
        for c in range(C):
            value = tl.load(fill + c)
            pixels = tl.load(images + c * plane + offsets, mask=valid & ~in_box, other=value)
            tl.store(erased + c * plane + offsets, pixels, mask=valid)


@triton.jit
def _erase_kernel(images, saliency, fill, erased, mask, nonfinite, C, C_SAL, H, W, k, radius,
                  FROM_GRADIENT: tl.constexpr, BLOCK: tl.constexpr, BAND: tl.constexpr,
                  BLOCK_W: tl.constexpr):
    """One program per image: select the anchors, then dilate, mask and fill band by band."""
    n = tl.program_id(0).to(tl.int64)
    plane = H * W
    image_saliency = saliency + n * C_SAL * plane
    threshold, cut = _select_anchors(image_saliency, nonfinite + n, plane, C_SAL, k, FROM_GRADIENT, BLOCK)
    _erase_bands(images + n * C * plane, image_saliency, fill, erased + n * C * plane, mask + n * plane,
                 C, C_SAL, H, W, threshold, cut, radius, FROM_GRADIENT, BAND, BLOCK_W)


def erase_triton(
    images: torch.Tensor,
    saliency: torch.Tensor,
    top_percent: float,
    box: int,
    fill: Sequence[float] | torch.Tensor | None = None,
    *,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton kernel on saliency [N, H, W]; same contract as `erase_reference`.

    `out` = (erased, mask) preallocated outputs, written in full. Needs CUDA tensors, or CPU tensors with
    TRITON_INTERPRET=1 set before triton was first imported.
    """
    args = check_erase_args(images, saliency, top_percent, box, fill)
    return _launch(images, saliency, args, "saliency", False, out)


def erase_from_gradient_triton(
    images: torch.Tensor,
    gradient: torch.Tensor,
    top_percent: float,
    box: int,
    fill: Sequence[float] | torch.Tensor | None = None,
    *,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`erase_triton` on a raw gradient [N, C', H, W]: max over channels of |gradient| is taken in the kernel."""
    args = check_erase_args(images, gradient, top_percent, box, fill, saliency_name="gradient", per_channel=True)
    return _launch(images, gradient, args, "gradient", True, out)


def launch_config(height: int, width: int) -> dict[str, int]:
    """Block sizes and warps for an image size: a band spans whole rows and holds at most TILE pixels."""
    block_w = triton.next_power_of_2(width)
    band = max(1, min(triton.next_power_of_2(height), TILE // block_w))
    block = min(triton.next_power_of_2(height * width), TILE)
    return {"BLOCK": block, "BAND": band, "BLOCK_W": block_w, "num_warps": 4 if band * block_w <= 1024 else 8}


def device_guard(device: torch.device) -> contextlib.AbstractContextManager:
    """Make `device` current for a launch: Triton launches on the current CUDA device, not the tensors' one."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _launch(
    images: torch.Tensor,
    saliency: torch.Tensor,
    args: EraseArgs,
    saliency_name: str,
    from_gradient: bool,
    out: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Allocate or check the outputs, launch one program per image, and raise if the saliency was not finite."""
    if not (images.is_cuda or isinstance(_erase_kernel, InterpretedFunction)):
        raise ValueError("erase_triton needs CUDA tensors (or TRITON_INTERPRET=1 set before triton is imported); "
                         "use erase or erase_reference on the CPU")
    n, c, h, w = images.shape
    if out is None:
        out = (torch.empty(images.shape, dtype=images.dtype, device=images.device),
               torch.empty((n, h, w), dtype=torch.bool, device=images.device))
    erased, mask = out
    if erased.shape != images.shape or erased.dtype != images.dtype or not erased.is_contiguous():
        raise ValueError("out[0] must be a contiguous tensor of the images' shape and dtype")
    if mask.shape != (n, h, w) or mask.dtype != torch.bool or not mask.is_contiguous():
        raise ValueError("out[1] must be a contiguous bool tensor of shape (N, H, W)")
    if n == 0:
        return erased, mask
    nonfinite = torch.empty(n, dtype=torch.int32, device=images.device)
    with device_guard(images.device):
        _erase_kernel[(n,)](
            images.contiguous(), saliency.contiguous(), args.fill.to(images.dtype), erased,
            mask.view(torch.uint8), nonfinite,
            c, saliency.shape[1] if from_gradient else 1, h, w, args.k, min(args.radius, max(h, w)),
            FROM_GRADIENT=from_gradient, **launch_config(h, w),
        )
    images_hit = int((nonfinite > 0).sum())
    if images_hit:
        raise nonfinite_error(saliency_name, images_hit)
    return erased, mask
