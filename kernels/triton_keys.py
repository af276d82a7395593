"""Device functions shared by the Triton erasure kernels: reading the ranking input and its order-preserving keys."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Leading key bits that can differ between ranking values of each dtype once widened to float32: bfloat16 and
# float16 leave the low 16 and 13 mantissa bits zero, so those key bits follow from the sign alone.
KEY_BITS = {torch.float32: 32, torch.float16: 19, torch.bfloat16: 16}


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
