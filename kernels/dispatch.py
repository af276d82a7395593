"""The erasure op's two entry points: `erase` and `erase_unchecked`, on the implementation the tensors' device
picks (the Triton kernels on CUDA, the reference elsewhere) or on the one named."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from miscause.kernels.erase_spec import EraseResult, checked
from miscause.kernels.reference import erase_reference_unchecked
from miscause.kernels.triton_erase import VARIANTS, erase_triton_unchecked

Implementation = Literal["reference", "triton", "packed", "bands", "split"]
# `reference`: plain PyTorch; `triton`: the Triton kernel chosen for the size; the others force one Triton kernel.
IMPLEMENTATIONS: tuple[Implementation, ...] = ("reference", "triton", *VARIANTS)


def erase(
    images: torch.Tensor,
    ranking: torch.Tensor,
    top_percent: float,
    box: int,
    fill: Sequence[float] | torch.Tensor | None = None,
    *,
    from_gradient: bool = False,
    implementation: Implementation | None = None,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Erase a `box`-sided square around each of every image's top `top_percent`% saliency pixels.

    images [N, C, H, W] float32|float16|bfloat16, ranking: the saliency [N, H, W], or with `from_gradient` a raw
    gradient [N, C', H, W] ranked by max over channels of |gradient| -> (erased like images, mask [N, H, W] bool).
    `fill` is one value per channel (default 0, the dataset mean in normalised space). The options are
    `erase_unchecked`'s.
    """
    return checked(erase_unchecked(images, ranking, top_percent, box, fill, from_gradient=from_gradient,
                                   implementation=implementation, out=out))


def erase_unchecked(
    images: torch.Tensor,
    ranking: torch.Tensor,
    top_percent: float,
    box: int,
    fill: Sequence[float] | torch.Tensor | None = None,
    *,
    from_gradient: bool = False,
    implementation: Implementation | None = None,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
    debug: bool = False,
) -> EraseResult:
    """`erase` with its status (NaN/Inf and anchor counts per image) left for `check_result`.

    On CUDA nothing is read back, so a caller erasing several groups checks them all in one host sync.
    `implementation` is one of IMPLEMENTATIONS (default: `triton` for CUDA tensors, else `reference`). The
    Triton kernels also take `out` = (erased, mask) preallocated outputs, written in full, and `debug`, which
    compiles in device assertions of the selection's invariants.
    """
    if implementation is None:
        implementation = "triton" if isinstance(images, torch.Tensor) and images.is_cuda else "reference"
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {', '.join(IMPLEMENTATIONS)}, got {implementation!r}")
    if implementation == "reference":
        if out is not None or debug:
            raise ValueError("out and debug are options of the Triton kernels, not of the reference")
        return erase_reference_unchecked(images, ranking, top_percent, box, fill, from_gradient=from_gradient)
    return erase_triton_unchecked(images, ranking, top_percent, box, fill, from_gradient=from_gradient, out=out,
                                  variant=None if implementation == "triton" else implementation, debug=debug)
