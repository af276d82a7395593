"""A split's images as the analysis runs them: the whole split or a seeded subset, with their positions."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from miscause.jobs.training.data import Split


class Images(NamedTuple):
    """uint8 images [N,H,W,3], their labels [N] and their positions in the split [N]."""

    images: np.ndarray
    labels: np.ndarray
    positions: np.ndarray


def subset(split: Split, limit: int | None, seed: int) -> Images:
    """The whole split, or `limit` images drawn without replacement with the seed (in split order)."""
    positions = np.arange(len(split))
    if limit is not None and limit < len(split):
        positions = np.sort(np.random.default_rng(seed).choice(len(split), limit, replace=False))
    return Images(split.images[positions], split.labels[positions], positions)
