"""What the Triton erasure kernels share: keys and the ranking read, radix selection, band dilation, launch sizes.

The packed, band and split kernels (`triton_packed.py`, `triton_bands.py`, `triton_split.py`) rank the same
way: each value becomes a uint32 key whose unsigned order is its float order (`order_key`), read from a
saliency map or reduced from a raw gradient as it is loaded (`load_saliency`). The band and split kernels
select with the same radix steps (`radix_*`, `find_tie`, each over a range of pixels, so the split kernel runs
them on slices) and dilate and fill with the same band steps (`row_reach`, `reach_rows`, `fill_band`). The
host side's block sizes per kernel (`packed_config`, `bands_config`, `split_config`) and the device guard the
launcher puts around every launch live here too.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

# Leading key bits that can differ between ranking values of each dtype once widened to float32: bfloat16 and
# float16 leave the low 16 and 13 mantissa bits zero, so those key bits follow from the sign alone.
KEY_BITS = {torch.float32: 32, torch.float16: 19, torch.bfloat16: 16}

# Row index standing for "no such row on this side": beyond any image side, yet far from int32 overflow.
FAR = tl.constexpr(1 << 24)

# Elements per tile: the band kernels' selection chunk and dilation band hold at most this many pixels.
_TILE = 2048

# Pixels per split-kernel selection slice, about: whole rows, so a slice holds a few selection tiles.
_SLICE_PIXELS = 2 * _TILE

# Longest side the packed kernel takes: a row or column of the mask packs into one 64-bit word.
MAX_SIDE = 64

# Pixels per packed-kernel program: whole images, as many as fit.
_PIXELS_PER_PROGRAM = 4096


@triton.jit
def order_key(x):
    """uint32 key of a float32 whose unsigned order is the float order (negatives flipped, sign set on the rest).

    -0.0 is first made +0.0, because the two compare equal and must tie rather than rank.
    """
    bits = tl.where(x == 0.0, 0.0, x).to(tl.uint32, bitcast=True)
    return tl.where((bits >> 31) == 1, bits ^ 0xFFFFFFFF, bits | 0x80000000)


@triton.jit
def complete_key(prefix, KEY_BITS: tl.constexpr):
    """The key whose KEY_BITS leading bits are `prefix`'s: the rest zero for values >= 0 (key bit 31 set), else one.

    Selection searches only the leading bits; this gives the exact key it found.
    """
    if KEY_BITS < 32:
        low: tl.constexpr = (1 << (32 - KEY_BITS)) - 1
        prefix = tl.where((prefix >> 31) == 1, prefix, prefix | low)
    return prefix


@triton.jit
def is_nonfinite(x):
    """NaN or Inf, read from the exponent bits so no floating-point rewrite can fold the test away."""
    return (x.to(tl.uint32, bitcast=True) & 0x7F800000) == 0x7F800000


@triton.jit
def load_saliency(saliency, offsets, valid, plane, C_SAL, FROM_GRADIENT: tl.constexpr):
    """float32 saliency at pixel offsets: the map itself, or max over C_SAL channels of |gradient| (NaN kept)."""
    value = tl.load(saliency + offsets, mask=valid, other=0.0).to(tl.float32)
    if FROM_GRADIENT:
        value = tl.abs(value)
        for c in range(1, C_SAL):
            channel = tl.load(saliency + c * plane + offsets, mask=valid, other=0.0).to(tl.float32)
            value = tl.maximum(value, tl.abs(channel), propagate_nan=tl.PropagateNan.ALL)
    return value


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


def device_guard(device: torch.device) -> contextlib.AbstractContextManager:
    """Make `device` current for a launch: Triton launches on the current CUDA device, not the tensors' one."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def packed_config(images: int, height: int, width: int) -> dict[str, int | bool]:
    """Block shape for N images of a size: whole images per program, no padding when the shape allows."""
    if max(height, width) > MAX_SIDE:
        raise ValueError(f"the packed kernel takes sides up to {MAX_SIDE}, got {height}x{width}")
    hb, wb = triton.next_power_of_2(height), triton.next_power_of_2(width)
    per_program = max(1, _PIXELS_PER_PROGRAM // (hb * wb))
    even = (hb, wb) == (height, width) and images % per_program == 0
    return {"IMAGES": per_program, "HB": hb, "WB": wb, "EVEN": even, "num_warps": 4}


def bands_config(height: int, width: int) -> dict[str, int]:
    """Block sizes and warps for an image size: a band spans whole rows and holds at most _TILE pixels."""
    block_w = triton.next_power_of_2(width)
    band = max(1, min(triton.next_power_of_2(height), _TILE // block_w))
    block = min(triton.next_power_of_2(height * width), _TILE)
    return {"BLOCK": block, "BAND": band, "BLOCK_W": block_w, "num_warps": 4 if band * block_w <= 1024 else 8}


def split_config(height: int, width: int) -> dict[str, int]:
    """Block sizes and warps for an image size: the band kernel's bands and warps, slices of about _SLICE_PIXELS.

    A slice is whole rows; SLICES is the slice count rounded up to a power of two, BLOCK the selection tile.
    """
    rows = max(1, min(height, _SLICE_PIXELS // width))
    config = bands_config(height, width)
    return {**config, "SLICE": rows, "SLICES": triton.next_power_of_2(triton.cdiv(height, rows)),
            "BLOCK": min(triton.next_power_of_2(rows * width), _TILE)}
