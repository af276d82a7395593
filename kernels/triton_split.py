"""The erasure kernel for large images: selection and dilation split over many programs per image.

With one program per image (`triton_bands.py`), 256 images of 224x224 on a GPU with 132 multiprocessors run
as two waves of long programs, each reading its 50,176 saliency values once per radix pass. Here every step
spreads an image over several programs, and no step waits for the host:

1. Radix passes, one launch each, grid (image, slice): a slice is SLICE whole rows (a few thousand pixels).
   Each program first recomputes its image's selection state (key prefix, anchors still needed, ties in the
   chosen bin) from the histograms the earlier passes left in a zeroed int32 buffer, [N, 4 passes x 256 bins]
   plus two counters; if those passes already resolved the image (tied == needed) it returns at once, else
   it adds its slice's histogram of the next key byte with atomics. The first pass also adds the slice's
   NaN/Inf count; the last also stores the slice's own histogram, so that the ties per slice are known. Only
   the passes covering the ranking dtype's KEY_BITS run.
2. Resolve, one program per image: the threshold key, and the cut when the last bin holds more ties than
   are still needed (the slice holding the needed-th tie is found from the per-slice counts, and only that
   slice is read to find its index). Stores (threshold, cut), the NaN/Inf count, and a zero anchor count.
3. Dilate and fill, grid (image, band of BAND rows): each program evaluates the anchor rule on its band and
   on up to `radius` rows above and below it, dilates with the band steps of `triton_shared.py`, writes the band's mask
   and each channel once, and adds the anchors of its own rows to the image's count.

The outputs are the band kernel's, bit for bit. A box as wide as the image makes every band read the whole
image's saliency; the common small boxes read a band plus a row or two on each side.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from miscause.kernels import triton_shared as shared

# Per-image int32 counters: the histograms of up to four radix passes, the NaN/Inf count, the bands done (DEBUG).
_NONFINITE = tl.constexpr(4 * 256)
_BANDS_DONE = tl.constexpr(4 * 256 + 1)
_COUNTERS = tl.constexpr(4 * 256 + 2)


@triton.jit
def _image_state(counters, k, PASSES: tl.constexpr):
    """(prefix, needed, tied) of an image after its first PASSES radix passes, from their summed histograms.

    A pass after the one that resolved the image never ran (its histogram is zero) and is skipped.
    """
    prefix, needed, tied = shared.radix_start(k)
    for byte in tl.static_range(PASSES):
        if tied != needed:
            prefix, needed, tied = shared.radix_step(tl.load(counters + byte * 256 + tl.arange(0, 256)), prefix, needed,
                                              byte)
    return prefix, needed, tied


@triton.jit
def split_pass_kernel(saliency, counters, slices, C_SAL, H, W, k, FROM_GRADIENT: tl.constexpr,
                      KEY_BITS: tl.constexpr, BYTE: tl.constexpr, SLICE: tl.constexpr, BLOCK: tl.constexpr):
    """Radix pass BYTE, program (image, slice): add the slice's histogram to the image's, unless already resolved."""
    n = tl.program_id(0).to(tl.int64)
    s = tl.program_id(1)
    plane = H * W
    image_counters = counters + n * _COUNTERS
    prefix, needed, tied = _image_state(image_counters, k, BYTE)
    if tied != needed:
        start = s * SLICE * W
        histogram, bad = shared.radix_histogram(saliency + n * C_SAL * plane, start,
                                                tl.minimum(start + SLICE * W, plane), plane, C_SAL, prefix,
                                                FROM_GRADIENT, BYTE, BLOCK)
        bins = tl.arange(0, 256)
        tl.atomic_add(image_counters + BYTE * 256 + bins, histogram, mask=histogram > 0, sem="relaxed")
        if BYTE == 0:
            tl.atomic_add(image_counters + _NONFINITE, bad, mask=bad > 0, sem="relaxed")
        if BYTE == shared.radix_passes(KEY_BITS) - 1:
            tl.store(slices + (n * tl.num_programs(1) + s) * 256 + bins, histogram)


@triton.jit
def split_resolve_kernel(saliency, counters, slices, state, nonfinite, anchors, C_SAL, H, W, k,
                         FROM_GRADIENT: tl.constexpr, KEY_BITS: tl.constexpr, SLICE: tl.constexpr,
                         SLICES: tl.constexpr, BLOCK: tl.constexpr, DEBUG: tl.constexpr):
    """One program per image, after the passes: store (threshold, cut) and the NaN/Inf count, zero the anchors."""
    n = tl.program_id(0).to(tl.int64)
    plane = H * W
    image_counters = counters + n * _COUNTERS
    prefix, needed, tied = _image_state(image_counters, k, shared.radix_passes(KEY_BITS))
    threshold = shared.radix_threshold(prefix, needed, tied, KEY_BITS, DEBUG)
    cut = plane
    if tied > needed:
        # Every pass ran: the last one's per-slice histograms, read at the chosen byte, count each slice's ties.
        last_shift: tl.constexpr = 32 - 8 * shared.radix_passes(KEY_BITS)
        digit = ((prefix >> last_shift) & 0xFF).to(tl.int32)
        count = (H + SLICE - 1) // SLICE
        index = tl.arange(0, SLICES)
        ties = tl.load(slices + (n * count + index) * 256 + digit, mask=index < count, other=0)
        s = tl.sum((tl.cumsum(ties, axis=0) < needed).to(tl.int32), axis=0)
        before = tl.sum(tl.where(index < s, ties, 0), axis=0)
        start = s * SLICE * W
        cut = shared.find_tie(saliency + n * C_SAL * plane, start, tl.minimum(start + SLICE * W, plane), plane, C_SAL,
                       threshold, needed - before, FROM_GRADIENT, BLOCK)
    tl.store(state + 2 * n, threshold.to(tl.int32, bitcast=True))
    tl.store(state + 2 * n + 1, cut)
    tl.store(nonfinite + n, tl.load(image_counters + _NONFINITE))
    tl.store(anchors + n, 0)


@triton.jit
def split_fill_kernel(images, saliency, fill, erased, mask, anchors, counters, state, C, C_SAL, H, W, k, radius,
                      FROM_GRADIENT: tl.constexpr, BAND: tl.constexpr, BLOCK_W: tl.constexpr, DEBUG: tl.constexpr):
    """Program (image, band of BAND rows): dilate the anchors into the band's box mask, store it, fill the pixels.

    Adds the anchors of the band's own rows to the image's count; with DEBUG the image's last band to finish
    checks that the count is k.
    """
    n = tl.program_id(0).to(tl.int64)
    top = tl.program_id(1) * BAND
    plane = H * W
    threshold = tl.load(state + 2 * n).to(tl.uint32, bitcast=True)
    cut = tl.load(state + 2 * n + 1)
    image_saliency = saliency + n * C_SAL * plane
    cols = tl.arange(0, BLOCK_W)[None, :]
    rows = top + tl.arange(0, BAND)[:, None]
    reach, held = shared.row_reach(image_saliency, rows, cols, H, W, plane, C_SAL, threshold, cut, radius,
                                   FROM_GRADIENT, BLOCK_W)
    last_above, _ = shared.reach_rows(image_saliency, tl.maximum(top - radius, 0), top, cols, W, plane, C_SAL,
                                      threshold, cut, radius, FROM_GRADIENT, BAND, BLOCK_W)
    _, first_below = shared.reach_rows(image_saliency, top + BAND, tl.minimum(top + BAND + radius, H), cols, W, plane,
                                       C_SAL, threshold, cut, radius, FROM_GRADIENT, BAND, BLOCK_W)
    shared.fill_band(images + n * C * plane, fill, erased + n * C * plane, mask + n * plane, C, H, W, rows, cols, reach,
              last_above, first_below, radius, BAND, BLOCK_W)
    tl.atomic_add(anchors + n, held, sem="relaxed")
    if DEBUG:
        done = tl.atomic_add(counters + n * _COUNTERS + _BANDS_DONE, 1, sem="acq_rel") + 1
        if done == tl.num_programs(1):
            total = tl.atomic_add(anchors + n, 0, sem="acquire")
            tl.device_assert(total == k, "the bands did not hold exactly k anchors")


def split_erase(images: torch.Tensor, saliency: torch.Tensor, fill: torch.Tensor, erased: torch.Tensor,
                mask: torch.Tensor, nonfinite: torch.Tensor, anchors: torch.Tensor, C: int, C_SAL: int, H: int,
                W: int, k: int, radius: int, *, FROM_GRADIENT: bool, KEY_BITS: int, DEBUG: bool, SLICE: int,
                SLICES: int, BLOCK: int, BAND: int, BLOCK_W: int, num_warps: int, debug: bool = False) -> None:
    """Launch the selection, then the fill, on checked contiguous tensors; read nothing back.

    The arguments are the band kernel's, with `split_config`'s constants.
    """
    options = {"num_warps": num_warps, **({"debug": True} if debug else {})}
    counters, state = _split_select(saliency, nonfinite, anchors, C_SAL, H, W, k, FROM_GRADIENT=FROM_GRADIENT,
                                   KEY_BITS=KEY_BITS, DEBUG=DEBUG, SLICE=SLICE, SLICES=SLICES, BLOCK=BLOCK, **options)
    split_fill_kernel[(len(state), triton.cdiv(H, BAND))](images, saliency, fill, erased, mask, anchors, counters,
                                                          state, C, C_SAL, H, W, k, radius,
                                                          FROM_GRADIENT=FROM_GRADIENT, BAND=BAND, BLOCK_W=BLOCK_W,
                                                          DEBUG=DEBUG, **options)


def _split_select(saliency: torch.Tensor, nonfinite: torch.Tensor, anchors: torch.Tensor, C_SAL: int, H: int, W: int,
                 k: int, *, FROM_GRADIENT: bool, KEY_BITS: int, DEBUG: bool, SLICE: int, SLICES: int, BLOCK: int,
                 **options: int | bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The radix passes and the resolve step: (counters [N, _COUNTERS], state [N, 2]: threshold key bits, cut).

    Also stores each image's NaN/Inf count and zeroes its anchor count. The scratch buffers' sizes depend only
    on the shape.
    """
    n = len(nonfinite)
    counters = torch.zeros((n, _COUNTERS.value), dtype=torch.int32, device=saliency.device)
    slices = torch.empty((n, triton.cdiv(H, SLICE), 256), dtype=torch.int32, device=saliency.device)
    state = torch.empty((n, 2), dtype=torch.int32, device=saliency.device)
    for byte in range(shared.radix_passes(KEY_BITS)):
        split_pass_kernel[(n, slices.shape[1])](saliency, counters, slices, C_SAL, H, W, k, FROM_GRADIENT=FROM_GRADIENT,
                                                KEY_BITS=KEY_BITS, BYTE=byte, SLICE=SLICE, BLOCK=BLOCK, **options)
    split_resolve_kernel[(n,)](saliency, counters, slices, state, nonfinite, anchors, C_SAL, H, W, k,
                               FROM_GRADIENT=FROM_GRADIENT, KEY_BITS=KEY_BITS, SLICE=SLICE, SLICES=SLICES,
                               BLOCK=BLOCK, DEBUG=DEBUG, **options)
    return counters, state

