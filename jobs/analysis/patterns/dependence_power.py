"""Power of the whole dependence rule by simulation: the smallest difference in P(j | i, error) the rule calls
model-dependent with 80% probability, and how often it calls a truly equal pair shared.

Counts are simulated with each model's observed errors of the class and the pair's observed dispersion: a model's
share is drawn from a beta distribution around its architecture's share with intra-class correlation
(dispersion - 1) / (errors - 1), so its count has dispersion times the binomial variance (beta-binomial), then the
count from the binomial. Under the alternative every architecture has the pair's pooled share but one, shifted by
the difference: the architecture with the fewest errors of the class (the hardest to tell apart), shifted towards
1/2. Each simulated data set goes through the rule as applied (F test and equivalence test, dispersion estimated
afresh) at the per-pair level the correction asks of the smallest p-value (alpha / family size; alpha without
correction), so the power is that of the least favoured pair of the family. Every difference is simulated from the
same seed, which keeps the power curve smooth; the smallest difference is found by bisection on the grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from miscause.jobs.analysis.patterns.dependence_tests import architecture_test, equivalence_p, pooled

POWER = 0.8
SIMULATIONS = 1000
STEP = 0.01


@dataclass(frozen=True, kw_only=True)
class RulePower:
    """The smallest difference (on a grid of STEP) the rule calls model-dependent with POWER probability, None when
    not even the largest possible one is; the probability it calls a pair with equal shares shared."""

    min_detectable: float | None
    shared_power: float


def simulate_counts(e: np.ndarray, mean: np.ndarray, dispersion: float,
                    seed: np.random.SeedSequence) -> np.ndarray:
    """Beta-binomial counts [..., SIMULATIONS, M] with `e` [M] trials, means [..., 1, M] and the dispersion."""
    rng = np.random.default_rng(seed)
    shape = np.broadcast_shapes(mean.shape[:-2] + (SIMULATIONS, len(e)), mean.shape)
    mean = np.broadcast_to(np.clip(mean, 1e-9, 1 - 1e-9), shape)
    rho = np.where(e > 1, (dispersion - 1) / np.maximum(e - 1, 1), 0.0).clip(0.0, 0.99)
    if np.any(rho > 0):
        concentration = 1 / np.maximum(rho, 1e-12) - 1
        mean = np.where(rho > 0, rng.beta(mean * concentration, (1 - mean) * concentration), mean)
    return rng.binomial(e.astype(np.int64), mean).astype(float)


def called(n: np.ndarray, e: np.ndarray, arch: np.ndarray, n_arch: int, level: float,
           margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(model-dependent, shared) [...] for counts [..., M]: the rule's two calls at `level`."""
    test = architecture_test(n, e, arch)
    arch_n, arch_e = pooled(n, e, arch, n_arch)
    dispersion = np.where(np.isfinite(test.dispersion), test.dispersion, 1.0)
    shared = (equivalence_p(arch_n, arch_e, dispersion, margin) <= level) & np.isfinite(test.dispersion)
    return (test.p_value <= level) & ~shared, shared


def rule_power(e: np.ndarray, arch: np.ndarray, n_arch: int, share: float, dispersion: float, level: float,
               margin: float, seed: np.random.SeedSequence) -> RulePower:
    """The rule's power for one pair: errors of the class per model `e` [M], architecture indices [M], the pooled
    share and dispersion observed."""
    arch_e = pooled(np.zeros(len(e)), e, arch, n_arch)[1]
    candidates = np.flatnonzero(arch_e > 0)
    shifted = arch == candidates[np.argmin(arch_e[candidates])]
    direction = 1.0 if share <= 0.5 else -1.0
    _, shared = called(simulate_counts(e, np.full((1, len(e)), share), dispersion, seed), e, arch, n_arch, level,
                       margin)
    reach = 1 - share if direction > 0 else share
    deltas = np.arange(1, int(np.floor(reach / STEP + 1e-9)) + 1) * STEP

    def detected(index: int) -> bool:
        means = share + direction * deltas[index] * shifted[None, :]
        dependent, _ = called(simulate_counts(e, means, dispersion, seed), e, arch, n_arch, level, margin)
        return bool(dependent.mean() >= POWER)

    if len(deltas) == 0 or not detected(len(deltas) - 1):
        return RulePower(min_detectable=None, shared_power=float(shared.mean()))
    low, high = -1, len(deltas) - 1
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if detected(middle) else (middle, high)
    return RulePower(min_detectable=float(deltas[high]), shared_power=float(shared.mean()))
