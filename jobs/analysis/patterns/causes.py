"""Cause assignment per class pair: shared by every model, dependent on the model, or neither.

The rule, from the edges each model has (see `significant_edges`) and the model-dependence test
(`model_dependence`: Cochran's Q across models on the same images, calibrated by seed replicates when given):
- quorum q = max(M - tolerance, floor(M/2) + 1) for M models: all but `tolerance` models, and always a strict
  majority, so a confusion called shared is never in fewer models than not.
- a pair whose rate is heterogeneous across models (beyond seed-to-seed variation when replicate groups are
  given) and significant in at least one model is `non_essential_interference` for the models where it is
  significant (a property of what a model learned);
- a pair significant in at least q models and not heterogeneous is `morphological_similarity` (the classes look
  alike to every model: a property of the data);
- any other pair is `not_significant`: in particular a pair significant in some models only but not shown to
  differ between models, which one model's edge and another's missing edge cannot tell apart.
- with one model q = 1 and nothing can be heterogeneous: every edge is `morphological_similarity`.
- when the erasure study ran, a `non_essential_interference` pair stays so only if saliency-anchored erasure
  verifiably corrects its errors in at least one of its models; otherwise it becomes `not_significant` (its
  pattern cause is kept beside it).
"""

from __future__ import annotations

import numpy as np

from miscause.jobs.analysis.patterns.significance import adjust, edge_p_values

MORPHOLOGICAL = "morphological_similarity"
NON_ESSENTIAL = "non_essential_interference"
NOT_SIGNIFICANT = "not_significant"
CAUSES = (MORPHOLOGICAL, NON_ESSENTIAL, NOT_SIGNIFICANT)


def significant_edges(counts: np.ndarray, alpha: float, correction: str,
                      min_count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p-values, adjusted p-values, significant) [K,K] for one model's confusion counts.

    An edge i -> j is significant when its adjusted p-value (correction over the model's K(K-1) off-diagonal
    pairs) is at most `alpha` and it holds at least `min_count` errors.
    """
    k = counts.shape[0]
    p = edge_p_values(counts)
    off = ~np.eye(k, dtype=bool)
    adjusted = np.ones_like(p)
    adjusted[off] = adjust(p[off], correction)
    significant = off & (adjusted <= alpha) & (counts >= min_count)
    return p, adjusted, significant


def quorum(n_models: int, tolerance: int) -> int:
    """Models an edge must be significant in to count as shared: all but `tolerance`, at least a majority."""
    return max(n_models - tolerance, n_models // 2 + 1)


def assign_causes(significant: list[np.ndarray], tolerance: int,
                  heterogeneous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cause [K,K] of str, models significant [K,K] int) from each model's significant-edge matrix and the
    pairs the model-dependence test found heterogeneous."""
    n_significant = np.sum(significant, axis=0).astype(int)
    q = quorum(len(significant), tolerance)
    cause = np.full(n_significant.shape, NOT_SIGNIFICANT, dtype=object)
    cause[(n_significant >= 1) & heterogeneous] = NON_ESSENTIAL
    cause[(n_significant >= q) & ~heterogeneous] = MORPHOLOGICAL
    return cause, n_significant


def verified_cause(pattern_cause: str, models: list[str], verified_models: list[str]) -> str:
    """The cause after the erasure check: an unverified `non_essential_interference` is not a causal claim."""
    if pattern_cause == NON_ESSENTIAL and not set(models) & set(verified_models):
        return NOT_SIGNIFICANT
    return pattern_cause
