"""The erasure kernel for images of any size: one program per image, radix selection, then bands of rows.

Selection (`_select_anchors`). Radix select fixes the image's k-th largest key one byte at a time, most
significant first: each pass builds a 256-bin histogram of the next byte over the pixels whose higher bytes
match those chosen so far, and keeps the byte at which the count from the top reaches the number of anchors
still needed. Only the passes covering the key bits the ranking dtype can vary run (KEY_BITS: bfloat16 two,
float16 three, float32 four); `complete_key` then gives the exact key. Selection stops early after any pass
whose chosen bin holds exactly the anchors still needed: every pixel of that bin is then an anchor, and the
prefix so far (lower bits zero) is a threshold no pixel of the bin is below and every pixel outside it is
either above or below. If more pixels equal the threshold than are still needed, one more pass counts the
ties in row-major order to find where they stop being anchors. The result is a rule any pixel can evaluate on
its own: anchor iff key > threshold, or key == threshold and index < cut. The per-pass steps (`radix_*`,
`find_tie`) take a range of pixels, so the split kernel (`triton_split.py`) runs the same code on slices.

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

from miscause.kernels.triton_keys import complete_key, is_nonfinite, load_saliency, order_key

# Row index standing for "no such row on this side": beyond any image side, yet far from int32 overflow.
FAR = tl.constexpr(1 << 24)

# Elements per tile: the selection chunk and the dilation band hold at most this many pixels.
TILE = 2048


@triton.constexpr_function
def radix_passes(key_bits: int) -> int:
    """Radix passes, of one key byte each, that cover the leading `key_bits` bits of the key."""
    return (key_bits + 7) // 8


@triton.jit
def radix_start(k):
    """Selection state before any radix pass: (key prefix, anchors still needed, pixels tied in the chosen bin).

    `tied` starts at -1, which never equals `needed` (k >= 1), so the first pass always runs.
    """
    return tl.zeros([], dtype=tl.uint32), tl.zeros([], dtype=tl.int32) + k, tl.full([], -1, dtype=tl.int32)


@triton.jit
def radix_step(histogram, prefix, needed, BYTE: tl.constexpr):
    """One radix pass's choice from the 256-bin histogram of key byte BYTE: (prefix with it, needed, tied).

    The byte kept is the largest d at which the count of live pixels whose byte is >= d reaches `needed`;
    `needed` drops by the pixels above it and `tied` counts those in its bin. When tied == needed every pixel
    of the bin is an anchor: the prefix with its lower bits zero is then an exact threshold and cut = plane.
    """
    bins = tl.arange(0, 256)
    at_least = tl.cumsum(histogram, axis=0, reverse=True)
    digit = tl.sum((at_least >= needed).to(tl.int32), axis=0) - 1
    needed -= tl.sum(tl.where(bins > digit, histogram, 0), axis=0)
    tied = tl.sum(tl.where(bins == digit, histogram, 0), axis=0)
    return prefix | (digit.to(tl.uint32) << (24 - 8 * BYTE)), needed, tied


@triton.jit
def radix_threshold(prefix, needed, tied, KEY_BITS: tl.constexpr, DEBUG: tl.constexpr):
    """The threshold key once selection stops: the prefix itself when its bin is all anchors, else its full key.

    Selection stops early only when tied == needed; otherwise every pass ran, the prefix covers the KEY_BITS
    leading bits, and all pixels of its bin share the one key `complete_key` gives. DEBUG asserts that the
    k-th largest key was found.
    """
    if DEBUG:
        tl.device_assert((needed >= 1) & (tied >= needed), "radix select: the k-th largest key is not found")
    return tl.where(tied == needed, prefix, complete_key(prefix, KEY_BITS))


@triton.jit
def _tile(saliency, offset, end, plane, C_SAL, FROM_GRADIENT: tl.constexpr, BLOCK: tl.constexpr):
    """(offsets, in range, float32 saliency) of the BLOCK pixels from `offset`, those at `end` or after masked."""
    offsets = offset + tl.arange(0, BLOCK)
    valid = offsets < end
    return offsets, valid, load_saliency(saliency, offsets, valid, plane, C_SAL, FROM_GRADIENT)


@triton.jit
def radix_histogram(saliency, start, end, plane, C_SAL, prefix, FROM_GRADIENT: tl.constexpr, BYTE: tl.constexpr,
                    BLOCK: tl.constexpr):
    """(256-bin histogram of key byte BYTE over the pixels in [start, end) whose higher bytes are the prefix's,
    their count of NaN/Inf values: counted in the first pass only, 0 in the others)."""
    shift: tl.constexpr = 24 - 8 * BYTE
    histogram = tl.zeros([256], dtype=tl.int32)
    bad = tl.zeros([], dtype=tl.int32)
    for offset in range(start, end, BLOCK):
        _, valid, value = _tile(saliency, offset, end, plane, C_SAL, FROM_GRADIENT, BLOCK)
        key = order_key(value)
        if BYTE == 0:
            bad += tl.sum((valid & is_nonfinite(value)).to(tl.int32), axis=0)
            live = valid
        else:
            live = valid & ((key >> (shift + 8)) == (prefix >> (shift + 8)))
        histogram += tl.histogram(((key >> shift) & 0xFF).to(tl.int32), 256, mask=live)
    return histogram, bad


@triton.jit
def find_tie(saliency, start, end, plane, C_SAL, threshold, rank, FROM_GRADIENT: tl.constexpr, BLOCK: tl.constexpr):
    """The index after the rank-th pixel (from 1, row-major) of [start, end) whose key equals the threshold."""
    seen = tl.zeros([], dtype=tl.int32)
    last = tl.zeros([], dtype=tl.int32)
    for offset in range(start, end, BLOCK):
        offsets, valid, value = _tile(saliency, offset, end, plane, C_SAL, FROM_GRADIENT, BLOCK)
        tie = valid & (order_key(value) == threshold)
        ranks = seen + tl.cumsum(tie.to(tl.int32), axis=0)
        last = tl.maximum(last, tl.max(tl.where(tie & (ranks == rank), offsets + 1, 0), axis=0))
        seen += tl.sum(tie.to(tl.int32), axis=0)
    return last


@triton.jit
def _select_anchors(saliency, nonfinite, plane, C_SAL, k, FROM_GRADIENT: tl.constexpr, KEY_BITS: tl.constexpr,
                    BLOCK: tl.constexpr, DEBUG: tl.constexpr):
    """Radix select of the k-th largest key; returns (threshold, cut) defining the anchors (see module doc).

    Also stores the image's count of NaN/Inf saliency values at `nonfinite`, read during the first pass.
    """
    prefix, needed, tied = radix_start(k)
    for byte in tl.static_range(radix_passes(KEY_BITS)):
        if tied != needed:
            histogram, bad = radix_histogram(saliency, 0, plane, plane, C_SAL, prefix, FROM_GRADIENT, byte, BLOCK)
            if byte == 0:
                tl.store(nonfinite, bad)
            prefix, needed, tied = radix_step(histogram, prefix, needed, byte)
    threshold = radix_threshold(prefix, needed, tied, KEY_BITS, DEBUG)
    cut = plane
    if tied > needed:
        cut = find_tie(saliency, 0, plane, plane, C_SAL, threshold, needed, FROM_GRADIENT, BLOCK)
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
def row_reach(saliency, rows, cols, row_limit, W, plane, C_SAL, threshold, cut, radius,
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
def reach_rows(saliency, start, end, cols, W, plane, C_SAL, threshold, cut, radius, FROM_GRADIENT: tl.constexpr,
               BAND: tl.constexpr, BLOCK_W: tl.constexpr):
    """Per column, the (last, first) row in [start, end) with a pixel within `radius` columns of an anchor in its row.

    -FAR and FAR stand for none; the rows are read BAND at a time.
    """
    band_rows = tl.arange(0, BAND)[:, None]
    last = tl.full([BLOCK_W], -FAR, dtype=tl.int32)
    first = tl.full([BLOCK_W], FAR, dtype=tl.int32)
    for at in range(start, end, BAND):
        rows = at + band_rows
        reach, _ = row_reach(saliency, rows, cols, end, W, plane, C_SAL, threshold, cut, radius, FROM_GRADIENT,
                              BLOCK_W)
        last = tl.maximum(last, tl.max(tl.where(reach, rows, -FAR), axis=0))
        first = tl.minimum(first, tl.min(tl.where(reach, rows, FAR), axis=0))
    return last, first


@triton.jit
def fill_band(images, fill, erased, mask, C, H, W, rows, cols, reach, last_above, first_below, radius,
              BAND: tl.constexpr, BLOCK_W: tl.constexpr):
    """Store a band's box mask and its pixels, each channel read (erased pixels not even read) and written once.

    A pixel is in the box iff a row within `radius` reaches an anchor along itself at its column: a row of the
    band (`reach`), the last such row above the band or the first below it.
    """
    plane = H * W
    in_box = (_window_any(reach, tl.arange(0, BAND)[:, None], radius, 0, BAND)
              | (last_above[None, :] >= rows - radius) | (first_below[None, :] <= rows + radius))
    valid = (rows < H) & (cols < W)
    offsets = rows * W + cols
    tl.store(mask + offsets, in_box.to(tl.uint8), mask=valid)
    for c in range(C):
        value = tl.load(fill + c)
        pixels = tl.load(images + c * plane + offsets, mask=valid & ~in_box, other=value)
        tl.store(erased + c * plane + offsets, pixels, mask=valid)


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
        reach, band_anchors = row_reach(saliency, rows, cols, H, W, plane, C_SAL, threshold, cut, radius,
                                         FROM_GRADIENT, BLOCK_W)
        anchors += band_anchors
        # ... and the first such row below the band, looking at most `radius` rows ahead.
        _, first_below = reach_rows(saliency, top + BAND, tl.minimum(top + BAND + radius, H), cols, W, plane, C_SAL,
                                    threshold, cut, radius, FROM_GRADIENT, BAND, BLOCK_W)
        fill_band(images, fill, erased, mask, C, H, W, rows, cols, reach, last_above, first_below, radius, BAND,
                  BLOCK_W)
        last_above = tl.maximum(last_above, tl.max(tl.where(reach, rows, -FAR), axis=0))
    return anchors


@triton.jit
def bands_kernel(images, saliency, fill, erased, mask, nonfinite, anchors, C, C_SAL, H, W, k, radius,
                 FROM_GRADIENT: tl.constexpr, KEY_BITS: tl.constexpr, BLOCK: tl.constexpr, BAND: tl.constexpr,
                 BLOCK_W: tl.constexpr, DEBUG: tl.constexpr):
    """One program per image: select the anchors, then dilate, mask and fill band by band.

    Stores the image's NaN/Inf count at `nonfinite` and its anchor count (always k) at `anchors`.
    """
    n = tl.program_id(0).to(tl.int64)
    plane = H * W
    image_saliency = saliency + n * C_SAL * plane
    threshold, cut = _select_anchors(image_saliency, nonfinite + n, plane, C_SAL, k, FROM_GRADIENT, KEY_BITS, BLOCK,
                                     DEBUG)
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
