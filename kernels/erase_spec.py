"""The erasure op's contract shared by every implementation: argument checks, the anchor count, the fill.

Keeping these in one place means the reference and the Triton kernel reject the same inputs with the same
messages and agree on k to the pixel.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

import torch

from miscause.erasure import ErasureSettings

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class EraseArgs:
    """Checked arguments: anchors per image, the box half-width, and one float32 fill value per channel.

    `fill_values` holds the fill as numbers when it was given as numbers (None for a tensor on a device).
    """

    k: int
    radius: int
    fill: torch.Tensor
    fill_values: tuple[float, ...] | None = None

    def fill_as(self, dtype: torch.dtype) -> torch.Tensor:
        """The fill rounded to `dtype` on its device; a fill given as numbers costs no copy after the first call."""
        if self.fill_values is None:
            return self.fill.to(dtype)
        return _cached_fill(self.fill_values, self.fill.device, dtype)


@functools.lru_cache(maxsize=64)
def _cached_fill(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """One fill tensor per (values, device, dtype), made once: no host-to-device copy per call.

    Rounded through float32 like every other fill. Not to be written to: callers share it.
    """
    return torch.tensor(values, dtype=torch.float32).to(device=device, dtype=dtype)


def anchor_count(top_percent: float, pixels: int) -> int:
    """k = ceil(p/100 * pixels), clamped to [1, pixels].

    p is taken at its shortest decimal spelling, so p=0.1 of 1000 pixels is exactly 1 anchor rather than 2
    (the binary value of 0.1 is a hair above one tenth).
    """
    exact = Fraction(repr(float(top_percent))) * pixels / 100
    return min(max(math.ceil(exact), 1), pixels)


def check_erase_args(
    images: torch.Tensor,
    saliency: torch.Tensor,
    top_percent: float,
    box: int,
    fill: Sequence[float] | torch.Tensor | None,
    *,
    saliency_name: str = "saliency",
    per_channel: bool = False,
) -> EraseArgs:
    """Validate shapes, dtypes, devices, p and the box (`ErasureSettings.check`) and the fill; raise ValueError
    saying what is wrong.

    `per_channel` means `saliency` is a raw gradient [N, C', H, W] reduced inside the op, not a map [N, H, W].
    Finiteness is not checked here: each implementation checks it where it reads the values anyway.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a [N, C, H, W] tensor, got {_describe(images)}")
    if images.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"images must be float32, float16 or bfloat16, got {images.dtype}")
    n, c, h, w = images.shape
    if c < 1 or h < 1 or w < 1:
        raise ValueError(f"images need at least one channel, row and column, got shape {tuple(images.shape)}")
    if not isinstance(saliency, torch.Tensor):
        raise ValueError(f"{saliency_name} must be a tensor, got {_describe(saliency)}")
    if per_channel:
        if saliency.dim() != 4 or saliency.shape[0] != n or saliency.shape[2:] != (h, w) or saliency.shape[1] < 1:
            raise ValueError(
                f"{saliency_name} must have shape (N, C', H, W) with N, H, W = {(n, h, w)} to match images, "
                f"got {tuple(saliency.shape)}"
            )
    elif tuple(saliency.shape) != (n, h, w):
        raise ValueError(
            f"{saliency_name} must have shape (N, H, W) = {(n, h, w)} to match images, got {tuple(saliency.shape)}"
        )
    if saliency.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{saliency_name} must be float32, float16 or bfloat16, got {saliency.dtype}")
    if saliency.device != images.device:
        raise ValueError(f"{saliency_name} is on {saliency.device} but images are on {images.device}")
    ErasureSettings(top_percent=top_percent, box=box).check()
    fill_tensor, fill_values = _fill_values(fill, c, images)
    return EraseArgs(k=anchor_count(top_percent, h * w), radius=(box - 1) // 2, fill=fill_tensor,
                     fill_values=fill_values)


def ranking_name(from_gradient: bool) -> str:
    """What the ranking input is called in messages: the raw gradient, or a saliency map."""
    return "gradient" if from_gradient else "saliency"


class EraseResult(NamedTuple):
    """An erasure's outputs and its per-image status, not yet read back: `nonfinite` must be 0, `anchors` k.

    `name` is what the ranking input was (saliency or gradient), for the error message.
    """

    erased: torch.Tensor
    mask: torch.Tensor
    nonfinite: torch.Tensor
    anchors: torch.Tensor
    k: int
    name: str


def checked(result: EraseResult) -> tuple[torch.Tensor, torch.Tensor]:
    """(erased, mask) of a result whose status `check_result` passed: the checked form of every entry point."""
    check_result(result)
    return result.erased, result.mask


def check_result(*results: EraseResult) -> None:
    """Raise ValueError if an image had NaN/Inf ranking values, RuntimeError if one got other than k anchors.

    One host sync for every check of every result, so a caller can check a whole batch's erasures at once.
    """
    results = tuple(result for result in results if len(result.nonfinite))
    if not results:
        return
    counts = torch.stack([torch.stack([(result.nonfinite > 0).sum(), (result.anchors != result.k).sum()])
                          for result in results]).tolist()
    for result, (images_hit, miscounted) in zip(results, counts, strict=True):
        if images_hit:
            raise ValueError(f"{result.name} contains NaN or Inf in {images_hit} image(s); cannot rank its pixels")
        if miscounted:
            raise RuntimeError(f"the erasure marked other than {result.k} anchors in {miscounted} image(s)")


def _fill_values(fill: Sequence[float] | torch.Tensor | None, channels: int,
                 images: torch.Tensor) -> tuple[torch.Tensor, tuple[float, ...] | None]:
    """One float32 value per channel on the images' device, and the same as numbers unless it came on a device.

    None is 0, the dataset mean in normalised space. A fill tensor on a device is not read back (no sync).
    """
    if fill is None:
        numbers_given = (0.0,) * channels
    elif isinstance(fill, torch.Tensor) and fill.device.type != "cpu":
        values = fill.to(device=images.device, dtype=torch.float32).reshape(-1)
        _check_fill_length(values.numel(), channels)
        return values, None
    else:
        numbers_given = tuple(torch.as_tensor(fill, dtype=torch.float32).reshape(-1).tolist())
    _check_fill_length(len(numbers_given), channels)
    return _cached_fill(numbers_given, images.device, torch.float32), numbers_given


def _check_fill_length(length: int, channels: int) -> None:
    """A fill needs one value per channel."""
    if length != channels:
        raise ValueError(f"fill must have one value per channel ({channels}), got {length}")


def _describe(value: object) -> str:
    """A short description of a wrong argument: a tensor's shape, else its type."""
    return f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
