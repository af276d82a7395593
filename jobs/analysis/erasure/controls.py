"""The area-matched random control: the saliency mask moved to a random place, every pixel count kept exactly.

Random anchors dilated into boxes scatter and cover far more of a small image than the clustered salient
anchors do, so a control with as many anchors erases more. This control instead shifts each image's saliency
mask by a uniform random offset (dy, dx), wrapping around the borders (a torus): the mask keeps its shape and
its exact pixel count, and only where it lies is random. Each image draws one offset, reused for every setting
of the sweep, so the shifted masks are nested like the saliency ones.
"""

from __future__ import annotations

import numpy as np
import torch

SHIFTED = "shifted"


def draw_offsets(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    """[n, 2] offsets (dy, dx), uniform over every position of the image."""
    return np.stack([rng.integers(0, height, n), rng.integers(0, width, n)], axis=1)


def shift_masks(masks: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """masks [N,H,W] bool rolled per image: out[n, y, x] = masks[n, (y - dy) % H, (x - dx) % W]."""
    n, h, w = masks.shape
    rows = (torch.arange(h, device=masks.device) - offsets[:, :1]) % h
    cols = (torch.arange(w, device=masks.device) - offsets[:, 1:]) % w
    moved = masks.gather(1, rows.unsqueeze(2).expand(n, h, w))
    return moved.gather(2, cols.unsqueeze(1).expand(n, h, w))
