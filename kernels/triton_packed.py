"""The erasure kernel for small images (sides up to 64): several images per program, everything in registers.

A program holds IMAGES whole images as one [HB, IMAGES, WB] block (HB, WB the sides rounded up to powers of
two), so the ranking input is read from memory exactly once and never re-read. Per-image values stay
[1, IMAGES, 1] blocks (reductions keep their axes). H and W are compile-time constants, so every pixel's offset
is an immediate from its image's base address.

Layout, as Triton 3.6 and 3.8 build it for 32x32 images (4 per program, 4 warps): a thread holds 16 adjacent
pixels of one row, a warp 8 rows of all 4 images, and the warps split the rows. A per-image count
(`_count`) therefore sums each row in-thread and with one shuffle, then the rows within the warp by
shuffles, and combines the 4 warps' partial counts through shared memory: two barriers per count. Summing the
other axis first would leave 32 columns to combine across warps (10x the shuffles, 4x the barriers).
`benchmarks/kernel_binaries.py --sass` counts what the binary does per image; docs/kernels.md keeps the figures.

Selection. Each image's k-th largest key is found by bisection on the uint32 key, most significant bit first:
a bit is kept when at least k keys are >= the threshold with that bit set. Counting steps over registers give
the exact key; no histogram. Anchors are the keys above it, and of those equal to it the first `k - #above`
in row-major order: the index of the last such tie is found by the same bisection on the pixel index
(computed only when some image of the block has more ties than it needs; no scan). Two early exits cut the
steps: only the leading KEY_BITS bits are searched (16 for bfloat16 ranking input, 19 for float16;
`complete_key` fills in the rest), and the search stops, checked every four bits, once exactly k keys of every
image of the block are >= its threshold: those k are the anchors, whatever the bits left unsearched.

Dilation. Anchor rows are packed into one word per row (bit x = column x); the box's horizontal reach is a
few shifts of that word. The result is repacked one word per column (bit y = row y) and spread the same way
down the columns, then unpacked into the [HB, IMAGES, WB] mask. The cost is the same for any box up to the
image's side.

Fill. The mask is stored, then each channel is read and written once. When the block has no padding (sides
powers of two, N a multiple of IMAGES) the loads and stores carry no mask, so they vectorise fully.

The keys and the ranking read are `triton_shared.py`'s, as is the block shape (`packed_config`).
"""

from __future__ import annotations

import triton
import triton.language as tl

from miscause.kernels.triton_shared import complete_key, is_nonfinite, load_saliency, order_key

# Bisection steps between two checks for the early exit (the check reduces across the block's warps).
_STEPS_PER_CHECK = tl.constexpr(4)


@triton.constexpr_function
def _index_bits(pixels: int) -> int:
    """Bits that hold every row-major index of an image of `pixels` pixels (at least one)."""
    return max(1, (pixels - 1).bit_length())


@triton.jit
def _bit_or(a, b):
    """Combine function for an OR reduction."""
    return a | b


@triton.jit
def _pack(flags, positions, axis: tl.constexpr, WIDE: tl.constexpr):
    """OR of flag << position along `axis` (kept, size 1): one word per line, bit i for position i.

    64-bit words if WIDE, else 32-bit.
    """
    if WIDE:
        bits = flags.to(tl.uint64) << positions.to(tl.uint64)
    else:
        bits = flags.to(tl.uint32) << positions.to(tl.uint32)
    return tl.reduce(bits, axis, _bit_or, keep_dims=True)


@triton.jit
def _spread(bits, radius, SIDE: tl.constexpr):
    """Each set bit widened to the bits within `radius` of it, among the word's first SIDE bits.

    Steps of SIDE or more reach nothing inside them (and would shift past a 32-bit word), so they are skipped.
    """
    result = bits
    for step in range(1, radius + 1):
        if step < SIDE:
            result = result | (bits << step) | (bits >> step)
    return result


@triton.jit
def _count(flags):
    """[1, IMAGES, 1]: per image, the set flags of an [HB, IMAGES, WB] block: along rows first, then down columns.

    Rows first: a row's pixels sit in one thread and its neighbour lane, so that sum is in-thread plus one
    shuffle, and only one value per row and image is left to combine across the warps (see the module doc).
    """
    return tl.sum(tl.sum(flags.to(tl.int32), axis=2, keep_dims=True), axis=0, keep_dims=True)


@triton.jit
def _select(key, valid, live, pixel, k, KEY_BITS: tl.constexpr, INDEX_BITS: tl.constexpr, DEBUG: tl.constexpr):
    """[HB, IMAGES, WB] bool: each image's k largest keys, ties to the smaller row-major index `pixel`.

    `valid` marks the block's real pixels, `live` its real images. Keys differ only in their KEY_BITS leading bits;
    pixel indices fit in INDEX_BITS bits.
    """
    threshold = tl.zeros([1, key.shape[1], 1], dtype=tl.uint32)
    one = tl.full([1, key.shape[1], 1], 1, dtype=tl.uint32)
    held = _count(valid)  # keys >= threshold
    top = tl.full([], 31, dtype=tl.int32)
    while (top >= 32 - KEY_BITS) & (tl.max(tl.where(live, held, k)) > k):
        for step in tl.static_range(_STEPS_PER_CHECK):
            candidate = threshold | (one << (top - step).to(tl.uint32))
            at_least = _count(valid & (key >= candidate))
            threshold = tl.where(at_least >= k, candidate, threshold)
            held = tl.where(at_least >= k, at_least, held)
        top -= _STEPS_PER_CHECK
    threshold = complete_key(threshold, KEY_BITS)
    above = valid & (key > threshold)
    tie = valid & (key == threshold)
    needed = k - _count(above)
    tied = _count(tie)
    surplus = tl.max(tied - needed)
    if DEBUG:
        tl.device_assert(((needed >= 0) & (tied >= needed)) | ~live, "bisection: the k-th largest key is not found")
    if surplus > 0:
        anchor = above | (tie & (pixel <= _last_tie(tie, pixel, needed, INDEX_BITS)))
    else:
        anchor = above | tie
    return anchor


@triton.jit
def _last_tie(tie, pixel, needed, INDEX_BITS: tl.constexpr):
    """[1, IMAGES, 1]: the row-major index of each image's needed-th tie (from 1), by bisection on the index.

    Bit by bit, most significant first, the index grows while fewer than `needed` ties lie before it: the same
    counting step as the key's bisection, with no scan (3-D scans do not compile on every Triton release).
    """
    last = tl.zeros_like(needed)
    for bit in tl.static_range(INDEX_BITS - 1, -1, -1):
        candidate = last | (1 << bit)
        last = tl.where(_count(tie & (pixel < candidate)) < needed, candidate, last)
    return last


@triton.jit
def _dilate(anchor, rows, cols, radius, HB: tl.constexpr, WB: tl.constexpr):
    """[HB, IMAGES, WB] bool: within Chebyshev distance `radius` of an anchor, on bit-packed rows and columns."""
    across = _spread(_pack(anchor, cols, 2, WB > 32), radius, WB)
    reach = ((across >> cols) & 1) != 0
    down = _spread(_pack(reach, rows, 0, HB > 32), radius, HB)
    return ((down >> rows) & 1) != 0


@triton.jit
def packed_kernel(images, saliency, fill, erased, mask, nonfinite, anchors, N, C, C_SAL, k, radius,
                  H: tl.constexpr, W: tl.constexpr, FROM_GRADIENT: tl.constexpr, KEY_BITS: tl.constexpr,
                  IMAGES: tl.constexpr,
                  HB: tl.constexpr, WB: tl.constexpr, EVEN: tl.constexpr, DEBUG: tl.constexpr):
    """IMAGES images per program: select, dilate, mask and fill with the block in registers.

    Stores each image's NaN/Inf count at `nonfinite` and its anchor count (always k) at `anchors`.
    """
    image = tl.program_id(0).to(tl.int64) * IMAGES + tl.arange(0, IMAGES)[None, :, None]
    rows = tl.arange(0, HB)[:, None, None]
    cols = tl.arange(0, WB)[None, None, :]
    plane: tl.constexpr = H * W
    pixel = rows * W + cols
    valid = (image < N) & (rows < H) & (cols < W)

    value = load_saliency(saliency + image * C_SAL * plane, pixel, valid, plane, C_SAL, FROM_GRADIENT)
    live = image < N
    tl.store(nonfinite + image, _count(valid & is_nonfinite(value)), mask=live)
    anchor = _select(order_key(value), valid, live, pixel, k, KEY_BITS, _index_bits(plane), DEBUG)
    held = _count(anchor)
    tl.store(anchors + image, held, mask=live)
    if DEBUG:
        tl.device_assert((held == k) | ~live, "selection did not give exactly k anchors")

    in_box = _dilate(anchor, rows, cols, radius, HB, WB)
    mask_offsets = image * plane + pixel
    offsets = image * C * plane + pixel
    if EVEN:
        tl.store(mask + mask_offsets, in_box.to(tl.uint8))
    else:
        tl.store(mask + mask_offsets, in_box.to(tl.uint8), mask=valid)
    for c in range(C):
        fill_value = tl.load(fill + c)
        if EVEN:
            pixels = tl.load(images + c * plane + offsets)
            tl.store(erased + c * plane + offsets, tl.where(in_box, fill_value, pixels))
        else:
            pixels = tl.load(images + c * plane + offsets, mask=valid)
            tl.store(erased + c * plane + offsets, tl.where(in_box, fill_value, pixels), mask=valid)

