"""The erasure study's controls beside the random anchors: where else the same erasure could have been.

- `shifted`: the saliency mask moved by a non-zero offset (dy, dx), wrapping around the borders (a torus), drawn
  uniformly among the offsets whose moved mask shares no pixel with the saliency mask. The moved mask keeps its
  shape and exact pixel count and never touches the salient pixels. A mask spread over much of the image has no
  such offset: that image has no shifted control (at p = 5, b = 3 about a third of a trained CIFAR model's test
  images, counted in the report); settings whose every mask covers more than half the image are an error.
- `matched` (location-matched): the saliency mask, same method and setting, of another image of the split with
  the same predicted class (the donor; among all other images when the class has no other). Saliency masks
  cluster in the image's centre whatever the class, so a donor's mask falls where salient masks fall, on an image
  where it is not salient: "salient" is no longer confounded with "central". Its pixel count is the donor's.
Each control takes several draws per image at the primary setting (`DRAWS`); `geometry` measures every mask's
pixels, its share in the image's central half (16 x 16 of 32 x 32) and its overlap with the saliency mask.
"""

from __future__ import annotations

import numpy as np
import torch

from miscause.errors import MiscauseError
from miscause.kernels import anchor_count

SHIFTED = "shifted"
MATCHED = "matched"
DRAWS = 10  # draws per image of each control at the primary setting
GEOMETRY = ("pixels", "central_share", "saliency_overlap")  # rows of `geometry`


def admissible_offsets(masks: torch.Tensor) -> torch.Tensor:
    """[N,H,W] bool: the offsets (dy, dx) whose wrapped shift of each mask [N,H,W] shares no pixel with it (the
    cyclic autocorrelation of the mask is 0 there; never (0, 0), where it is the mask's pixel count)."""
    spectrum = torch.fft.fft2(masks.double())
    overlap = torch.fft.ifft2(spectrum * spectrum.conj()).real
    return overlap < 0.5


def draw_offsets(masks: torch.Tensor, draws: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """[draws, N, 2] offsets (dy, dx), each uniform among the image's admissible ones, and [N] bool: whether the
    image has any (where not, its offsets are meaningless and the image has no shifted control)."""
    n, h, w = masks.shape
    allowed = admissible_offsets(masks).reshape(n, h * w).cpu()
    valid = allowed.any(1)
    weights = torch.where(valid.unsqueeze(1), allowed.double(), torch.ones_like(allowed, dtype=torch.float64))
    picked = torch.multinomial(weights, draws, replacement=True, generator=generator).T
    return torch.stack([picked // w, picked % w], dim=2).to(masks.device), valid


def check_shiftable(height: int, width: int, setting: tuple[float, int]) -> None:
    """A `MiscauseError` when no saliency mask of an image this size can have an admissible offset at `setting`:
    every mask holds at least its anchors and one box clipped at a corner, and a mask over more than half the
    pixels meets every shift of itself."""
    top_percent, box = setting
    corner = min((box + 1) // 2, height) * min((box + 1) // 2, width)
    least = max(anchor_count(top_percent, height * width), corner)
    if 2 * least > height * width:
        raise MiscauseError(f"the shifted control needs masks of at most half the image, but at top percent "
                            f"{top_percent:g}, box {box} every mask of a {height} x {width} image covers at least "
                            f"{least} of its {height * width} pixels: choose a smaller --top-percent or --box")


def shift_masks(masks: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """masks [N,H,W] bool rolled per image: out[n, y, x] = masks[n, (y - dy) % H, (x - dx) % W]."""
    n, h, w = masks.shape
    rows = (torch.arange(h, device=masks.device) - offsets[:, :1]) % h
    cols = (torch.arange(w, device=masks.device) - offsets[:, 1:]) % w
    moved = masks.gather(1, rows.unsqueeze(2).expand(n, h, w))
    return moved.gather(2, cols.unsqueeze(1).expand(n, h, w))


def draw_donors(predicted: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """[draws, N] donor rows: each uniform among the other rows with the same predicted class (among all other
    rows where the class has no other), never the row itself."""
    n = len(predicted)
    if n < 2:
        raise MiscauseError("the location-matched control needs at least two images per split")
    donors = np.empty((draws, n), dtype=np.int64)
    for c in np.unique(predicted):
        members = np.flatnonzero(predicted == c)
        pool = members if len(members) > 1 else np.arange(n)
        own = np.searchsorted(pool, members)  # each member's place in its pool
        picks = rng.integers(0, len(pool) - 1, (draws, len(members)))
        donors[:, members] = pool[picks + (picks >= own)]  # skip the image's own place
    return donors


def geometry(mask: torch.Tensor, saliency_mask: torch.Tensor) -> torch.Tensor:
    """[3, N] float: per image the mask's pixels, the share of them in the central half of each side (the
    central 16 x 16 of 32 x 32) and the share of them inside the saliency mask."""
    _, h, w = mask.shape
    pixels = mask.sum((1, 2)).double()
    central = mask[:, h // 4:h - h // 4, w // 4:w - w // 4].sum((1, 2)).double()
    inside = (mask & saliency_mask).sum((1, 2)).double()
    return torch.stack([pixels, central / pixels.clamp(min=1), inside / pixels.clamp(min=1)])
