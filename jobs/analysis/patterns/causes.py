"""Cause assignment per class pair: shared by every architecture, dependent on the architecture, or neither.

The rule, from the edges each model has (see `significant_edges`) and the dependence outcome of the pair
(`model_dependence`: `shared`, `model_dependent`, `undetermined` or `not_tested`):
- an architecture has an edge when a strict majority of its models (its seeds) have it; an unreplicated
  architecture when its one model has it;
- quorum q = max(A - tolerance, floor(A/2) + 1) for A architectures: all but `tolerance`, and always a strict
  majority, so a confusion called shared is never in fewer architectures than not;
- `morphological_similarity`: the pair is shown shared (equivalence test) and q or more architectures have the
  edge (the classes look alike to every architecture: a property of the data);
- `non_essential_interference`: the pair is shown model-dependent and some model has the edge (a property of what
  an architecture learned), for the models where it is significant;
- `undetermined`: any other pair some model has the edge of: neither shown shared nor shown dependent, shared but
  with the edge in too few architectures, or not tested (no replicate groups, one model);
- `not_significant`: no model has the edge.
- when the erasure study ran, a `non_essential_interference` pair stays so only if saliency-anchored erasure
  verifiably corrects its errors in at least one of its models; otherwise it becomes `undetermined` (its pattern
  cause is kept beside it).
"""

from __future__ import annotations

import numpy as np

from miscause.jobs.analysis.patterns.model_dependence import MODEL_DEPENDENT, SHARED
from miscause.jobs.analysis.patterns.significance import adjust, edge_p_values

MORPHOLOGICAL = "morphological_similarity"
NON_ESSENTIAL = "non_essential_interference"
UNDETERMINED = "undetermined"
NOT_SIGNIFICANT = "not_significant"
CAUSES = (MORPHOLOGICAL, NON_ESSENTIAL, UNDETERMINED, NOT_SIGNIFICANT)


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


def quorum(n_architectures: int, tolerance: int) -> int:
    """Architectures an edge must be in to count as shared: all but `tolerance`, at least a majority."""
    return max(n_architectures - tolerance, n_architectures // 2 + 1)


def architecture_edges(significant: list[np.ndarray], architecture: list[str]) -> dict[str, np.ndarray]:
    """Per architecture, its edges [K,K]: those a strict majority of its models have."""
    out = {}
    for name in dict.fromkeys(architecture):
        members = [s for s, a in zip(significant, architecture, strict=True) if a == name]
        out[name] = np.sum(members, axis=0) > len(members) / 2
    return out


def assign_causes(significant: list[np.ndarray], architecture: list[str], tolerance: int,
                  outcome: np.ndarray) -> np.ndarray:
    """The cause [K,K] of str from each model's significant-edge matrix, the models' architectures and each pair's
    dependence outcome [K,K] of str."""
    edges = architecture_edges(significant, architecture)
    in_architectures = np.sum(list(edges.values()), axis=0)
    anywhere = np.any(significant, axis=0)
    cause = np.full(anywhere.shape, NOT_SIGNIFICANT, dtype=object)
    cause[anywhere] = UNDETERMINED
    cause[(outcome == SHARED) & (in_architectures >= quorum(len(edges), tolerance))] = MORPHOLOGICAL
    cause[(outcome == MODEL_DEPENDENT) & anywhere] = NON_ESSENTIAL
    return cause


def verified_cause(pattern_cause: str, models: list[str], verified_models: list[str]) -> str:
    """The cause after the erasure check: an unverified `non_essential_interference` is not a causal claim."""
    if pattern_cause == NON_ESSENTIAL and not set(models) & set(verified_models):
        return UNDETERMINED
    return pattern_cause
