"""How alike models' error patterns are: model x model matrices."""

from __future__ import annotations

import numpy as np
from scipy import stats


def spearman_matrix(conditionals: list[np.ndarray]) -> np.ndarray:
    """Spearman rank correlation [M,M] of the off-diagonal conditional confusions of every two models.

    Undefined (NaN) where a model's off-diagonal entries are all equal, e.g. a model without errors.
    """
    k = conditionals[0].shape[0]
    off = ~np.eye(k, dtype=bool)
    values = [c[off] for c in conditionals]
    m = len(values)
    out = np.full((m, m), np.nan)
    for a in range(m):
        for b in range(a, m):
            if np.ptp(values[a]) == 0 or np.ptp(values[b]) == 0:
                continue
            out[a, b] = out[b, a] = 1.0 if a == b else stats.spearmanr(values[a], values[b]).statistic
    return out


def jaccard_matrix(significant: list[np.ndarray]) -> np.ndarray:
    """Jaccard index [M,M] of the sets of significant edges; two empty sets are identical (1.0)."""
    m = len(significant)
    out = np.ones((m, m))
    for a in range(m):
        for b in range(m):
            union = np.logical_or(significant[a], significant[b]).sum()
            if union:
                out[a, b] = np.logical_and(significant[a], significant[b]).sum() / union
    return out
