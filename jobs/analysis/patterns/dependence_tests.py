"""The tests on where a class's errors go, P(j | i, error) = n_ij / e_i per model: the quasi-binomial F test of the
architecture factor against seed-to-seed variation, the equivalence test between architectures, and the effect size
with its bootstrap interval. Every function is vectorised over leading axes (the power simulation calls it on
simulated counts)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep, tost_proportions_2indep

BINOMIAL = sm.families.Binomial()
CLIP = 1e-12
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True, kw_only=True)
class ArchitectureTest:
    """The quasi-binomial F test of the architecture factor (arrays over the leading axes)."""

    f: np.ndarray
    p_value: np.ndarray
    dispersion: np.ndarray
    df_between: int
    df_within: int


def pooled(n: np.ndarray, e: np.ndarray, arch: np.ndarray, n_arch: int) -> tuple[np.ndarray, np.ndarray]:
    """(errors to j, errors of i) per architecture [..., A]: the seeds' counts summed."""
    onehot = np.eye(n_arch)[arch]
    return n @ onehot, e @ onehot


def shares(count: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """count / errors, NaN where there are no errors."""
    return np.divide(count, errors, out=np.full(np.broadcast(count, errors).shape, np.nan), where=errors > 0)


def _deviance(y: np.ndarray, mu: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Binomial deviance summed over the models (last axis), from statsmodels' Binomial family."""
    return np.sum(BINOMIAL.resid_dev(y, np.clip(mu, CLIP, 1 - CLIP), var_weights=e) ** 2, axis=-1)


def architecture_test(n: np.ndarray, e: np.ndarray, arch: np.ndarray) -> ArchitectureTest:
    """Quasi-binomial GLM (logit link) of the share n/e with the architecture as factor and the models as
    observations weighted by their errors e [M]: F = (null deviance - deviance) / (A - 1) / dispersion against
    F(A - 1, M - A), the dispersion the Pearson chi-square over M - A (the seeds' spread within architectures),
    floored at 1 (no less than binomial sampling of the errors). Models without errors of the class carry no
    weight and no degree of freedom. `n` [..., M]; `arch` [M] architecture indices."""
    active = e > 0
    n, e, arch = n[..., active], e[active], arch[active]
    used, arch = np.unique(arch, return_inverse=True)
    df_between, df_within = len(used) - 1, len(e) - len(used)
    shape = n.shape[:-1]
    if df_between < 1 or df_within < 1:
        nan = np.full(shape, np.nan)
        return ArchitectureTest(f=nan, p_value=np.ones(shape), dispersion=nan, df_between=df_between,
                                df_within=df_within)
    arch_n, arch_e = pooled(n, e, arch, len(used))
    mu = (arch_n / arch_e)[..., arch]
    y = n / e
    overall = n.sum(axis=-1, keepdims=True) / e.sum()
    deviance, null = _deviance(y, mu, e), _deviance(y, overall, e)
    clipped = np.clip(mu, CLIP, 1 - CLIP)
    pearson = np.sum(e * (y - mu) ** 2 / BINOMIAL.variance(clipped), axis=-1)
    dispersion = np.maximum(pearson / df_within, 1.0)
    f = np.maximum(null - deviance, 0.0) / df_between / dispersion
    return ArchitectureTest(f=f, p_value=stats.f.sf(f, df_between, df_within), dispersion=dispersion,
                            df_between=df_between, df_within=df_within)


def equivalence_p(arch_n: np.ndarray, arch_e: np.ndarray, dispersion: np.ndarray, margin: float) -> np.ndarray:
    """Intersection-union p-value that every two architectures' shares lie within +-`margin`: the largest over the
    architecture pairs of the two one-sided tests (statsmodels `tost_proportions_2indep`, Agresti-Caffo) on the
    pooled counts divided by the dispersion (the effective sample size under seed-to-seed variation). 1 where an
    architecture has no errors of the class. `arch_n`, `arch_e` [..., A]; `dispersion` [...]."""
    worst = np.zeros(arch_n.shape[:-1])
    scale = np.asarray(dispersion)
    for a, b in combinations(range(arch_n.shape[-1]), 2):
        defined = (arch_e[..., a] > 0) & (arch_e[..., b] > 0)
        safe_a, safe_b = np.where(defined, arch_e[..., a], 1.0), np.where(defined, arch_e[..., b], 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):  # statsmodels also computes ratios we do not use
            p = tost_proportions_2indep(arch_n[..., a] / scale, safe_a / scale, arch_n[..., b] / scale,
                                        safe_b / scale, -margin, margin, method="agresti-caffo").pvalue
        worst = np.maximum(worst, np.where(defined, p, 1.0))
    return worst


@dataclass(frozen=True, kw_only=True)
class Effect:
    """The largest difference between architectures' pooled shares (highest minus lowest, the two chosen on the
    data) with two 95% intervals: `ci95`, seed-to-seed variation included (`difference_interval`; None where the
    dependence test did not run), and `ci95_images`, the percentile bootstrap over the class's images paired across
    models with the seeds fixed (None where some resample leaves one of the two architectures without errors of the
    class)."""

    difference: float
    high: str
    low: str
    ci95_images: tuple[float, float] | None
    ci95: tuple[float, float] | None = None


def difference_interval(arch_n: np.ndarray, arch_e: np.ndarray, dispersion: float, high: int,
                        low: int) -> tuple[float, float]:
    """95% interval of the difference between two architectures' pooled shares, the dual of the equivalence test:
    statsmodels' Agresti-Caffo interval on the pooled counts divided by the dispersion."""
    low_end, high_end = confint_proportions_2indep(arch_n[high] / dispersion, arch_e[high] / dispersion,
                                                   arch_n[low] / dispersion, arch_e[low] / dispersion,
                                                   method="agresti-caffo", compare="diff", alpha=0.05)
    return float(low_end), float(high_end)


def share_effect(err: np.ndarray, to_j: np.ndarray, arch: np.ndarray, names: list[str], seed: int) -> Effect | None:
    """The effect from per-image indicators [M, n] of the images of class i some model errs on (`err`: the model
    errs; `to_j`: it predicts j). Images no model errs on add to no share. None with fewer than two architectures
    with errors of the class."""
    arch_n, arch_e = pooled(to_j.sum(axis=1), err.sum(axis=1), arch, len(names))
    observed = shares(arch_n, arch_e)
    defined = np.flatnonzero(np.isfinite(observed))
    if len(defined) < 2:
        return None
    high, low = defined[np.argmax(observed[defined])], defined[np.argmin(observed[defined])]
    per_image = [indicator[arch == a].sum(axis=0) for a in (high, low) for indicator in (to_j, err)]

    def contrast(high_n: np.ndarray, high_e: np.ndarray, low_n: np.ndarray, low_e: np.ndarray,
                 axis: int = -1) -> np.ndarray:
        return (shares(high_n.sum(axis=axis), high_e.sum(axis=axis))
                - shares(low_n.sum(axis=axis), low_e.sum(axis=axis)))

    with warnings.catch_warnings():  # a resample that leaves an architecture without errors: no interval (None)
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        ci = stats.bootstrap(per_image, contrast, n_resamples=BOOTSTRAP_RESAMPLES, vectorized=True, paired=True,
                             method="percentile", rng=np.random.default_rng(seed)).confidence_interval
    interval = (float(ci.low), float(ci.high)) if np.isfinite([ci.low, ci.high]).all() else None
    return Effect(difference=float(observed[high] - observed[low]), high=names[high], low=names[low],
                  ci95_images=interval)
