"""The erasure kernel for images of any size: one program per image, radix selection, then bands of rows.

Selection (`_select_anchors`). Radix select fixes the image's k-th largest key one byte at a time, most
significant first: each of four passes builds a 256-bin histogram of the next byte over the pixels whose
higher bytes match those chosen so far, and keeps the byte at which the count from the top reaches the number
of anchors still needed. If more pixels equal that threshold than are still needed, one more pass counts the
ties in row-major order to find where they stop being anchors. The result is a rule any pixel can evaluate on
its own: anchor iff key > threshold, or key == threshold and index < cut.

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

import triton
import triton.language as tl

from miscause.kernels.triton_keys import is_nonfinite, load_saliency, order_key

# Row index standing for "no such row on this side": beyond any image side, yet far from int32 overflow.
FAR = tl.constexpr(1 << 24)

# Elements per tile: the selection chunk and the dilation band hold at most this many pixels.
TILE = 2048


@triton.jit
def _select_anchors(saliency, nonfinite, plane, C_SAL, k, FROM_GRADIENT: tl.constexpr, BLOCK: tl.constexpr,
                    DEBUG: tl.constexpr):
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
            value = load_saliency(saliency, offsets, valid, plane, C_SAL, FROM_GRADIENT)
            key = order_key(value)
            if byte == 0:
                bad += tl.sum((valid & is_nonfinite(value)).to(tl.int32), axis=0)
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
    if DEBUG:
        tl.device_assert((needed >= 1) & (tied >= needed), "radix select: the k-th largest key is not found")
    cut = plane
    if tied > needed:
        seen = tl.zeros([], dtype=tl.int32)
        last = tl.zeros([], dtype=tl.int32)
        for start in range(0, plane, BLOCK):
            offsets = start + tl.arange(0, BLOCK)
            valid = offsets < plane
            key = order_key(load_saliency(saliency, offsets, valid, plane, C_SAL, FROM_GRADIENT))
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
    """([rows, cols] bool: an anchor lies in the same row within `radius` columns, the anchors counted).

    Rows >= row_limit hold no anchors.
    """
    valid = (rows < row_limit) & (cols < W)
    offsets = rows * W + cols
    key = order_key(load_saliency(saliency, offsets, valid, plane, C_SAL, FROM_GRADIENT))
    anchor = valid & ((key > threshold) | ((key == threshold) & (offsets < cut)))
    return _window_any(anchor, cols, radius, 1, BLOCK_W), tl.sum(tl.sum(anchor.to(tl.int32), axis=1), axis=0)


@triton.jit
def _erase_bands(images, saliency, fill, erased, mask, C, C_SAL, H, W, threshold, cut, radius,
                 FROM_GRADIENT: tl.constexpr, BAND: tl.constexpr, BLOCK_W: tl.constexpr):
    """Walk the image in bands of BAND rows: dilate the anchors into the box mask, store it, fill the pixels.

    Returns the number of anchors the bands held.
    """
    plane = H * W
    cols = tl.arange(0, BLOCK_W)[None, :]
    band_rows = tl.arange(0, BAND)[:, None]
    # Per column: the last row above the current band holding a pixel that reaches an anchor along its row.
    last_above = tl.full([BLOCK_W], -FAR, dtype=tl.int32)
    anchors = tl.zeros([], dtype=tl.int32)
    for top in range(0, H, BAND):
        rows = top + band_rows
        reach, band_anchors = _row_reach(saliency, rows, cols, H, W, plane, C_SAL, threshold, cut, radius,
                                         FROM_GRADIENT, BLOCK_W)
        anchors += band_anchors
        # ... and the first such row below the band, looking at most `radius` rows ahead.
        look_end = tl.minimum(top + BAND + radius, H)
        first_below = tl.full([BLOCK_W], FAR, dtype=tl.int32)
        for ahead in range(top + BAND, look_end, BAND):
            ahead_rows = ahead + band_rows
            ahead_reach, _ = _row_reach(saliency, ahead_rows, cols, look_end, W, plane, C_SAL, threshold, cut,
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
    return anchors


@triton.jit
def bands_kernel(images, saliency, fill, erased, mask, nonfinite, anchors, C, C_SAL, H, W, k, radius,
                 FROM_GRADIENT: tl.constexpr, BLOCK: tl.constexpr, BAND: tl.constexpr, BLOCK_W: tl.constexpr,
                 DEBUG: tl.constexpr):
    """One program per image: select the anchors, then dilate, mask and fill band by band.

    Stores the image's NaN/Inf count at `nonfinite` and its anchor count (always k) at `anchors`.
    """
    n = tl.program_id(0).to(tl.int64)
    plane = H * W
    image_saliency = saliency + n * C_SAL * plane
    threshold, cut = _select_anchors(image_saliency, nonfinite + n, plane, C_SAL, k, FROM_GRADIENT, BLOCK, DEBUG)
    held = _erase_bands(images + n * C * plane, image_saliency, fill, erased + n * C * plane, mask + n * plane,
                        C, C_SAL, H, W, threshold, cut, radius, FROM_GRADIENT, BAND, BLOCK_W)
    tl.store(anchors + n, held)
    if DEBUG:
        tl.device_assert(held == k, "the bands did not hold exactly k anchors")


def bands_config(height: int, width: int) -> dict[str, int]:
    """Block sizes and warps for an image size: a band spans whole rows and holds at most TILE pixels."""
    block_w = triton.next_power_of_2(width)
    band = max(1, min(triton.next_power_of_2(height), TILE // block_w))
    block = min(triton.next_power_of_2(height * width), TILE)
    return {"BLOCK": block, "BAND": band, "BLOCK_W": block_w, "num_warps": 4 if band * block_w <= 1024 else 8}
