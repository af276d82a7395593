"""The erasure op as a fused Triton kernel: exact top-k selection, box dilation and fill in one launch.

Three kernels implement it, all exact and equal to the reference bit for bit:

- `packed` (`triton_packed.py`), for sides up to 64: several images per program held in registers, the k-th
  largest key found by bisection, the box dilated on bit-packed rows and columns;
- `bands` (`triton_bands.py`), for any size: one program per image, radix selection, bands of rows;
- `split` (`triton_split.py`), for large images: the same selection and bands spread over many programs per
  image, in a few launches.

Saliency values become uint32 keys whose unsigned order is their float order (`order_key`); anchors are
the k largest keys, ties to the smaller row-major index. Each launch writes, per image, the count of NaN/Inf
ranking values and the count of anchors (always k). `erase_triton_unchecked` returns them without reading
them, so it never waits for the device (no host sync, no allocation that depends on the data: it can be
captured in a CUDA graph once a call has warmed it up); `miscause.kernels.erase` checks them and raises. What
the kernels share (keys, radix and band steps, block sizes, the device guard) is in `triton_shared.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import triton
from triton.runtime.interpreter import InterpretedFunction

from miscause.kernels.erase_spec import EraseResult, check_erase_args, ranking_name
from miscause.kernels.triton_bands import bands_kernel
from miscause.kernels.triton_packed import packed_kernel
from miscause.kernels.triton_shared import KEY_BITS, MAX_SIDE, bands_config, device_guard, packed_config, split_config
from miscause.kernels.triton_split import split_erase, split_fill_kernel, split_pass_kernel, split_resolve_kernel

Variant = Literal["packed", "bands", "split"]
VARIANTS: tuple[Variant, ...] = ("packed", "bands", "split")

# Every Triton kernel a launch may run, for listing the compiled binaries' resources.
KERNELS = (packed_kernel, bands_kernel, split_pass_kernel, split_resolve_kernel, split_fill_kernel)

# Pixels from which an image takes the split kernel: from 128x128 an image spans eight or more band tiles, so
# one program per image is a long serial walk, and spreading it over programs outweighs the split's few extra
# launches and its recomputed selection state; below it the band kernel's single launch is cheaper.
_SPLIT_PIXELS = 128 * 128


def erase_triton_unchecked(
    images: torch.Tensor,
    ranking: torch.Tensor,
    top_percent: float,
    box: int,
    fill: Sequence[float] | torch.Tensor | None = None,
    *,
    from_gradient: bool = False,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
    variant: Variant | None = None,
    debug: bool = False,
) -> EraseResult:
    """Launch without reading anything back; the caller checks the status later (`check_result`), e.g. per batch.

    `ranking` is the saliency [N, H, W], or with `from_gradient` the raw gradient [N, C', H, W]. Images with
    NaN/Inf ranking values get unspecified outputs. `out` = (erased, mask) preallocated outputs, written in full;
    `variant` forces a kernel (default: `variant_for`); `debug` compiles in device assertions of the selection's
    invariants.
    """
    args = check_erase_args(images, ranking, top_percent, box, fill, saliency_name=ranking_name(from_gradient),
                            per_channel=from_gradient)
    if not (images.is_cuda or isinstance(bands_kernel, InterpretedFunction)):
        raise ValueError("a Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1 set before triton is imported); "
                         "use implementation='reference' on the CPU")
    n, c, h, w = images.shape
    variant = variant or variant_for(h, w)
    erased, mask = out if out is not None else _outputs(images)
    if erased.shape != images.shape or erased.dtype != images.dtype or not erased.is_contiguous():
        raise ValueError("out[0] must be a contiguous tensor of the images' shape and dtype")
    if mask.shape != (n, h, w) or mask.dtype != torch.bool or not mask.is_contiguous():
        raise ValueError("out[1] must be a contiguous bool tensor of shape (N, H, W)")
    nonfinite, anchors = torch.empty((2, n), dtype=torch.int32, device=images.device)
    result = EraseResult(erased, mask, nonfinite, anchors, args.k, ranking_name(from_gradient))
    if n == 0:
        return result
    common = (images.contiguous(), ranking.contiguous(), args.fill_as(images.dtype), erased, mask.view(torch.uint8),
              nonfinite, anchors)
    c_sal, radius = ranking.shape[1] if from_gradient else 1, min(args.radius, max(h, w))
    options = {"FROM_GRADIENT": from_gradient, "DEBUG": debug, **({"debug": True} if debug else {})}
    key_bits = KEY_BITS[ranking.dtype]
    with device_guard(images.device):
        if variant == "packed":
            config = packed_config(n, h, w)
            packed_kernel[(triton.cdiv(n, config["IMAGES"]),)](*common, n, c, c_sal, args.k, radius, H=h, W=w,
                                                                KEY_BITS=key_bits, **options, **config)
        elif variant == "split":
            split_erase(*common, c, c_sal, h, w, args.k, radius, KEY_BITS=key_bits, **options, **split_config(h, w))
        else:
            bands_kernel[(n,)](*common, c, c_sal, h, w, args.k, radius, KEY_BITS=key_bits, **options,
                               **bands_config(h, w))
    return result


def variant_for(height: int, width: int) -> Variant:
    """The kernel for an image size: packed when both sides fit a 64-bit word, split from _SPLIT_PIXELS, else bands."""
    if max(height, width) <= MAX_SIDE:
        return "packed"
    return "split" if height * width >= _SPLIT_PIXELS else "bands"


def _outputs(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh (erased, mask) for the images."""
    n, _, h, w = images.shape
    return (torch.empty(images.shape, dtype=images.dtype, device=images.device),
            torch.empty((n, h, w), dtype=torch.bool, device=images.device))
