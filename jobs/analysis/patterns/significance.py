"""The tests the analysis uses: edges against a no-structure baseline, paired erasure outcomes, rates compared
between causes, corrections, and the power of the erasure verification (the model-dependence tests are in
`dependence_tests`)."""

from __future__ import annotations

import numpy as np
from scipy import optimize, stats

from miscause.jobs.analysis.patterns.confusion import class_errors

CORRECTIONS = ("holm", "bh", "none")


def edge_p_values(counts: np.ndarray) -> np.ndarray:
    """One-sided binomial p-values [K,K] for "errors of class i go to j more often than chance".

    Baseline (no structure): a misclassified sample of class i is equally likely to land in any of the
    K-1 other classes, so count(i -> j) ~ Binomial(errors_i, 1/(K-1)); p = P(X >= count). The diagonal and
    rows without errors get p = 1.
    """
    k = counts.shape[0]
    n = np.repeat(class_errors(counts)[:, None], k, axis=1)
    p = stats.binom.sf(counts - 1, n, 1.0 / (k - 1))
    p[counts == 0] = 1.0
    np.fill_diagonal(p, 1.0)
    return np.clip(p, 0.0, 1.0)


def adjust(p_values: np.ndarray, method: str) -> np.ndarray:
    """Multiple-comparison adjusted p-values: Holm (family-wise error) or Benjamini-Hochberg (false discovery)."""
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}: choose one of {', '.join(CORRECTIONS)}")
    p = np.asarray(p_values, dtype=float)
    if method == "none" or p.size == 0:
        return p.copy()
    flat = p.reshape(-1)
    m = flat.size
    order = np.argsort(flat, kind="stable")
    ranked = flat[order]
    if method == "holm":
        stepped = np.maximum.accumulate(ranked * (m - np.arange(m)))
    else:
        stepped = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out.reshape(p.shape)


def mcnemar_greater(only_first: int, only_second: int) -> float:
    """Exact one-sided McNemar test on paired outcomes: P(first succeeds more often than second by chance).

    `only_first`/`only_second` count the discordant pairs; under the null each is equally likely, so
    p = P(Binomial(only_first + only_second, 1/2) >= only_first). No discordant pairs: p = 1.
    """
    total = only_first + only_second
    if total == 0:
        return 1.0
    return float(stats.binom.sf(only_first - 1, total, 0.5))


def bootstrap_interval(values: np.ndarray, level: float = 0.95, resamples: int = 10000,
                  seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval (`scipy.stats.bootstrap`) for the mean of paired per-image differences (e.g.
    +1 corrected, -1 broken, 0 unchanged): images are resampled, so each keeps its pair. No values: (0, 0); one
    value throughout: that value."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return (0.0, 0.0)
    if np.all(values == values[0]):
        return (float(values[0]), float(values[0]))
    result = stats.bootstrap((values,), np.mean, confidence_level=level, n_resamples=resamples,
                             method="percentile", batch=max(1, 2 ** 21 // values.size),
                             rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def fisher_greater(first: tuple[int, int], second: tuple[int, int]) -> float:
    """Exact one-sided Fisher test (Fisher 1935) that the first (successes, trials) rate exceeds the second's.

    No trials on either side: p = 1.
    """
    (a, n), (b, m) = first, second
    if n == 0 or m == 0:
        return 1.0
    return float(stats.fisher_exact([[a, n - a], [b, m - b]], alternative="greater").pvalue)


def mcnemar_min_detectable(n: int, alpha: float, power: float = 0.8) -> tuple[int, float | None]:
    """What the exact one-sided McNemar test (`mcnemar_greater`) on n paired subjects can detect at level `alpha`:
    (the fewest subjects that must succeed under the first treatment only, with none under the second only, for
    p <= alpha; the smallest such one-sided success rate d detected with probability `power`, the discordant
    count then being Binomial(n, d)). This is the most favourable alternative, so any real effect needs more.
    The rate is None when n is below the fewest needed: nothing n subjects can show is significant."""
    needed = int(np.ceil(np.log2(1 / alpha) - 1e-12))
    if n < needed:
        return needed, None
    rate = optimize.brentq(lambda d: stats.binom.sf(needed - 1, n, d) - power, 1e-12, 1.0, xtol=1e-10)
    return needed, float(rate)
