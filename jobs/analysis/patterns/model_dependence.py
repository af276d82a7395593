"""Whether the errors of a class go elsewhere depending on the architecture, beyond seed-to-seed variation, or
go to the same place in every architecture: per ordered pair (true i, predicted j) the share of class i's errors
that go to j, P(j | i, error) = n_ij / e_i, with each model's own error count e_i, so an architecture that errs
more in the same pattern is not called dependent.

- The family, fixed before any test: pairs with at least `min_count` errors in some model. Corrections run over
  it alone and its size is reported.
- Model dependence (`dependence_tests.architecture_test`): the quasi-binomial F test of the architecture factor,
  the dispersion estimated from the seed replicates and floored at 1. Needs replicate groups, at least two of them
  (checked in `replicates.check_replicates`); an unreplicated architecture adds to the between-architecture term
  and no degree of freedom to the dispersion.
- Shared (`dependence_tests.equivalence_p`): two one-sided tests against +-`margin` for every two architectures,
  the counts divided by the dispersion, intersection-union over the architecture pairs.
- Outcome: `shared` when the equivalence holds after correction (even where the F test rejects: a difference within
  the margin), else `model_dependent` when the F test rejects after correction, else `undetermined`. Pairs outside
  the family, and every pair without replicate groups or with one model, are `not_tested`.
- Per tested pair the effect (`dependence_tests.share_effect`) and the power of the whole rule
  (`dependence_power.rule_power`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from miscause.jobs.analysis.patterns.confusion import class_errors
from miscause.jobs.analysis.patterns.dependence_power import rule_power
from miscause.jobs.analysis.patterns.dependence_tests import (
    Effect,
    architecture_test,
    difference_interval,
    equivalence_p,
    pooled,
    share_effect,
    shares,
)
from miscause.jobs.analysis.patterns.significance import adjust

MODEL_DEPENDENT = "model_dependent"
SHARED = "shared"
UNDETERMINED = "undetermined"
NOT_TESTED = "not_tested"
OUTCOMES = (MODEL_DEPENDENT, SHARED, UNDETERMINED, NOT_TESTED)
DEFAULT_MARGIN = 0.1


@dataclass(frozen=True, kw_only=True)
class PairDependence:
    """One ordered pair's dependence result; the test's numbers are None where it was not tested."""

    in_family: bool
    outcome: str
    shares: dict[str, float | None]
    effect: Effect | None
    f: float | None = None
    df_between: int | None = None
    df_within: int | None = None
    dispersion: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    equivalence_p: float | None = None
    equivalence_adjusted: float | None = None
    min_detectable: float | None = None
    shared_power: float | None = None


@dataclass(frozen=True, kw_only=True)
class ModelDependence:
    """The dependence results of every ordered pair, and how the test was set up: whether it ran (and why not),
    the architectures and their models, the family's size, the margin, the per-pair level of the power simulation
    and its seed."""

    tested: bool
    reason: str | None
    architectures: dict[str, tuple[str, ...]]
    family_size: int
    margin: float
    level: float
    seed: int
    pairs: dict[tuple[int, int], PairDependence]

    @property
    def outcomes(self) -> dict[str, int]:
        """How many pairs of the family had each outcome."""
        found = [p.outcome for p in self.pairs.values() if p.in_family]
        return {outcome: found.count(outcome) for outcome in OUTCOMES}

    @property
    def detectable_range(self) -> tuple[float, float] | None:
        """The smallest and largest of the family's smallest detectable differences (None where none is)."""
        values = [p.min_detectable for p in self.pairs.values() if p.min_detectable is not None]
        return (min(values), max(values)) if values else None


def family(counts: list[np.ndarray], min_count: int) -> np.ndarray:
    """Pairs [K,K] with at least `min_count` errors in some model: the tested family, fixed before testing."""
    k = counts[0].shape[0]
    return ~np.eye(k, dtype=bool) & (np.max(np.stack(counts), axis=0) >= min_count)


def not_tested_reason(n_models: int, grouped: bool) -> str | None:
    """Why the dependence and equivalence tests do not run, or None when they do."""
    if n_models < 2:
        return "one model: there is nothing to compare"
    if not grouped:
        return ("no replicate groups (--replicates): without seeds of one architecture nothing tells an "
                "architecture's effect from a seed's")
    return None


def model_dependence(labels: np.ndarray, predicted: list[np.ndarray], counts: list[np.ndarray], names: list[str],
                     architecture: list[str], grouped: bool, *, alpha: float, correction: str, min_count: int,
                     margin: float, seed: int) -> ModelDependence:
    """The dependence results from the true labels [N], each model's predictions [N] and confusion counts [K,K],
    the models' names and architectures (a model outside every replicate group is its own), and whether replicate
    groups were given."""
    k = counts[0].shape[0]
    arch_names = list(dict.fromkeys(architecture))
    arch = np.array([arch_names.index(a) for a in architecture])
    members = {a: tuple(n for n, b in zip(names, architecture, strict=True) if b == a) for a in arch_names}
    errors = np.stack([class_errors(c) for c in counts]).astype(float)
    n_all = np.stack(counts).astype(float)
    candidates = family(counts, min_count)
    reason = not_tested_reason(len(counts), grouped)
    level = alpha if correction == "none" else alpha / max(int(candidates.sum()), 1)
    pairs = {}
    for i, j in zip(*np.nonzero(~np.eye(k, dtype=bool)), strict=True):
        arch_n, arch_e = pooled(n_all[:, i, j], errors[:, i], arch, len(arch_names))
        observed = {a: _number(s) for a, s in zip(arch_names, shares(arch_n, arch_e), strict=True)}
        pair = PairDependence(in_family=bool(candidates[i, j]), outcome=NOT_TESTED, shares=observed, effect=None)
        if pair.in_family:
            pair_seed = np.random.SeedSequence([seed, int(i), int(j)])
            rows = labels == i
            err = np.stack([p[rows] != i for p in predicted])
            informative = err.any(axis=0)
            to_j = np.stack([p[rows][informative] == j for p in predicted])
            effect = (share_effect(err[:, informative], to_j, arch, arch_names, int(pair_seed.generate_state(1)[0]))
                      if len(arch_names) > 1 else None)
            pair = replace(pair, effect=effect)
            if reason is None:
                pair = _tested(pair, n_all[:, i, j], errors[:, i], arch, arch_names, margin, level, pair_seed)
        pairs[int(i), int(j)] = pair
    if reason is None:
        pairs.update(_corrected({key: pair for key, pair in pairs.items() if pair.in_family}, alpha, correction))
    return ModelDependence(tested=reason is None, reason=reason, architectures=members,
                           family_size=int(candidates.sum()), margin=margin, level=level, seed=seed, pairs=pairs)


def _corrected(tested: dict[tuple[int, int], PairDependence], alpha: float,
               correction: str) -> dict[tuple[int, int], PairDependence]:
    """The family's pairs with both p-values corrected over the family, and their outcomes."""
    keys = list(tested)
    dependence = adjust(np.array([tested[key].p_value for key in keys]), correction)
    equivalence = adjust(np.array([tested[key].equivalence_p for key in keys]), correction)
    out = {}
    for key, p, q in zip(keys, dependence, equivalence, strict=True):
        outcome = SHARED if q <= alpha else MODEL_DEPENDENT if p <= alpha else UNDETERMINED
        out[key] = replace(tested[key], p_adjusted=float(p), equivalence_adjusted=float(q), outcome=outcome)
    return out


def _number(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _tested(pair: PairDependence, n: np.ndarray, e: np.ndarray, arch: np.ndarray, arch_names: list[str],
            margin: float, level: float, seed: np.random.SeedSequence) -> PairDependence:
    """One family pair with its test, equivalence test, the effect's interval and the power (before the correction
    over the family)."""
    test = architecture_test(n, e, arch)
    dispersion = float(test.dispersion)
    if not np.isfinite(dispersion):
        return replace(pair, outcome=UNDETERMINED, df_between=test.df_between, df_within=test.df_within,
                       p_value=1.0, equivalence_p=1.0, shared_power=0.0)
    arch_n, arch_e = pooled(n, e, arch, len(arch_names))
    effect = pair.effect and replace(pair.effect, ci95=difference_interval(
        arch_n, arch_e, dispersion, arch_names.index(pair.effect.high), arch_names.index(pair.effect.low)))
    power = rule_power(e, arch, len(arch_names), float(n.sum() / e.sum()), dispersion, level, margin, seed)
    return replace(pair, outcome=UNDETERMINED, effect=effect, f=float(test.f), df_between=test.df_between,
                   df_within=test.df_within, dispersion=dispersion, p_value=float(test.p_value),
                   equivalence_p=float(equivalence_p(arch_n, arch_e, np.asarray(dispersion), margin)),
                   min_detectable=power.min_detectable, shared_power=power.shared_power)
