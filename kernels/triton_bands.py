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
`find_tie`, in `triton_shared.py`) take a range of pixels, so the split kernel (`triton_split.py`) runs the same
code on slices.

Dilation and fill (`_erase_bands`). The image is walked in bands of full rows, top to bottom. Within a band
a running count of anchors along each row, read at the two edges of a (2r+1)-wide window, says whether an
anchor lies within r columns in the same row; the cost is the same for any box. The same count down each
column of that result, plus the last such row above the band (carried from earlier bands) and the first
within r rows below it (a short look-ahead), gives the box: erased iff a row within r has an anchor within
r columns, which is the Chebyshev ball. The band is then written: the mask once, each channel read (erased
pixels are not even read) and written once. The band steps (`row_reach`, `reach_rows`, `fill_band`) are in
`triton_shared.py`, which the split kernel shares; so are the block sizes (`bands_config`).

Memory traffic: the images are read and written once and the mask written once. The saliency is read once
from DRAM; the selection passes and the look-ahead re-read it from cache while the program holds the image.
"""

from __future__ import annotations

import triton
import triton.language as tl

from miscause.kernels import triton_shared as shared


@triton.jit
def _select_anchors(saliency, nonfinite, plane, C_SAL, k, FROM_GRADIENT: tl.constexpr, KEY_BITS: tl.constexpr,
                    BLOCK: tl.constexpr, DEBUG: tl.constexpr):
    """Radix select of the k-th largest key; returns (threshold, cut) defining the anchors (see module doc).

    Also stores the image's count of NaN/Inf saliency values at `nonfinite`, read during the first pass.
    """
    prefix, needed, tied = shared.radix_start(k)
    for byte in tl.static_range(shared.radix_passes(KEY_BITS)):
        if tied != needed:
            histogram, bad = shared.radix_histogram(saliency, 0, plane, plane, C_SAL, prefix, FROM_GRADIENT, byte,
                                                    BLOCK)
            if byte == 0:
                tl.store(nonfinite, bad)
            prefix, needed, tied = shared.radix_step(histogram, prefix, needed, byte)
    threshold = shared.radix_threshold(prefix, needed, tied, KEY_BITS, DEBUG)
    cut = plane
    if tied > needed:
        cut = shared.find_tie(saliency, 0, plane, plane, C_SAL, threshold, needed, FROM_GRADIENT, BLOCK)
    return threshold, cut


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
    last_above = tl.full([BLOCK_W], -shared.FAR, dtype=tl.int32)
    anchors = tl.zeros([], dtype=tl.int32)
    for top in range(0, H, BAND):
        rows = top + band_rows
        reach, band_anchors = shared.row_reach(saliency, rows, cols, H, W, plane, C_SAL, threshold, cut, radius,
                                         FROM_GRADIENT, BLOCK_W)
        anchors += band_anchors
        # ... and the first such row below the band, looking at most `radius` rows ahead.
        _, first_below = shared.reach_rows(saliency, top + BAND, tl.minimum(top + BAND + radius, H), cols, W, plane,
                                           C_SAL, threshold, cut, radius, FROM_GRADIENT, BAND, BLOCK_W)
        shared.fill_band(images, fill, erased, mask, C, H, W, rows, cols, reach, last_above, first_below, radius, BAND,
                  BLOCK_W)
        last_above = tl.maximum(last_above, tl.max(tl.where(reach, rows, -shared.FAR), axis=0))
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

