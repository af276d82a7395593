"""What erased pixels become: the erasure study's fills, named so the sweep and the result files can record them.

- `mean`: 0 in normalised space, the dataset mean (the study's original fill);
- `black`: the pixel value 0 in every channel, (0 - mean) / std in normalised space;
- `image_mean`: each image's own mean per channel;
- `blur`: the image blurred with a Gaussian (sigma `BLUR_SIGMA` pixels, replicated borders); the blurred pixels
  replace the erased ones.
A fill may also be three numbers, one constant per channel in normalised units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from miscause.errors import MiscauseError

FILLS = ("mean", "black", "image_mean", "blur")
BLUR_SIGMA = 2.0

Fill = tuple[float, ...] | str | None  # a name of FILLS, per-channel constants, or None (the dataset mean)


def fill_name(fill: Fill) -> str:
    """The fill as the report, the metrics and the result files name it."""
    if fill is None:
        return "mean"
    if isinstance(fill, str):
        return fill
    return "constant " + ",".join(f"{float(v):g}" for v in fill)


def parse_fill(words: Sequence[str]) -> Fill:
    """`--fill` words: one name of FILLS, or one number per channel (three); a `MiscauseError` otherwise."""
    if len(words) == 1 and words[0] in FILLS:
        return words[0]
    try:
        values = tuple(float(w) for w in words)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise MiscauseError(f"--fill takes one of {', '.join(FILLS)} or three finite numbers, got {' '.join(words)}")
    return values


def check_fill(fill: Fill) -> None:
    """A `MiscauseError` for an unknown fill name or a constant of the wrong length."""
    if isinstance(fill, str) and fill not in FILLS:
        raise MiscauseError(f"unknown fill {fill!r}: choose one of {', '.join(FILLS)} or three numbers")
    if isinstance(fill, tuple | list) and len(fill) != 3:
        raise MiscauseError(f"a constant fill needs one value per channel (3), got {len(fill)}")


def constant_values(fill: Fill, mean: Sequence[float], std: Sequence[float]) -> list[float] | None:
    """The fill as one normalised value per channel, as a policy states it; None for per-image fills."""
    if fill is None or fill == "mean":
        return [0.0] * len(mean)
    if fill == "black":
        return [-m / s for m, s in zip(mean, std, strict=True)]
    if isinstance(fill, str):
        return None
    return [float(v) for v in fill]


def canvas(images: torch.Tensor, fill: Fill, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """What the erased pixels of normalised images [N,C,H,W] become: a tensor broadcastable to them."""
    values = constant_values(fill, mean, std)
    if values is not None:
        return torch.tensor(values, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    if fill == "image_mean":
        return images.mean(dim=(2, 3), keepdim=True)
    return blur(images, BLUR_SIGMA)


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N,C,H,W], radius ceil(3 sigma), borders replicated."""
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights = (weights / weights.sum()).to(images.dtype)
    c = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    rows = F.conv2d(padded, weights.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(rows, weights.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def fill_masked(images: torch.Tensor, mask: torch.Tensor, fill_canvas: torch.Tensor) -> torch.Tensor:
    """Images [N,C,H,W] with the pixels of `mask` [N,H,W] taken from `fill_canvas`."""
    return torch.where(mask.unsqueeze(1), fill_canvas, images)
