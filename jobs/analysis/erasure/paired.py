"""Means with their 95% t intervals (scipy's t tests), one implementation for every analysis that reports one:
the mean of per-image values (the similarity of two maps of each image), and a difference of means with a
one-sided test in a stated direction (the erasure endpoints, the curves against the random order, the
randomisation steps against the seed-to-seed reference)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.stats import ttest_1samp

LEVEL = 0.95


@dataclass(frozen=True, kw_only=True)
class MeanInterval:
    """Per-image values summarised: how many images, how many of them undefined (NaN: a constant map, counted,
    not dropped silently), the mean and median of the defined ones and the mean's 95% t interval (None where
    fewer than two are defined or they do not vary)."""

    images: int
    undefined: int
    mean: float | None
    median: float | None
    ci95: tuple[float | None, float | None]


@dataclass(frozen=True, kw_only=True)
class MeanDifference:
    """A difference of means over `images` (paired per-image differences, or two independent groups together):
    its estimate `mean` (None without images), its two-sided 95% t interval and the one-sided p-value that it is
    `alternative` (`less` or `greater`) than 0; interval and p-value None where undefined (fewer than two images,
    or no variation)."""

    images: int
    mean: float | None
    ci95: tuple[float, float] | None
    alternative: str
    p_value: float | None

    @property
    def positive(self) -> bool:
        """Whether the 95% interval lies above 0."""
        return self.ci95 is not None and self.ci95[0] > 0


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def varies(*samples: np.ndarray) -> bool:
    """Whether a t test is defined: every sample has two values or more, and some sample is not constant."""
    return all(len(s) >= 2 for s in samples) and any(np.ptp(s) > 0 for s in samples)


def t_interval(result: Any, level: float = LEVEL) -> tuple[float, float] | None:
    """A scipy t test result's interval at `level`; None where it is not finite."""
    low, high = result.confidence_interval(level)
    return (float(low), float(high)) if np.isfinite(low) and np.isfinite(high) else None


def mean_interval(values: np.ndarray) -> MeanInterval:
    """The mean of the defined `values` [N] and its 95% t interval; NaN entries counted as undefined."""
    values = np.asarray(values, dtype=np.float64)
    defined = values[np.isfinite(values)]
    if len(defined) == 0:
        return MeanInterval(images=len(values), undefined=len(values), mean=None, median=None, ci95=(None, None))
    interval = t_interval(ttest_1samp(defined, 0.0)) if varies(defined) else None
    return MeanInterval(images=len(values), undefined=len(values) - len(defined), mean=float(defined.mean()),
                        median=float(np.median(defined)), ci95=interval or (None, None))


def mean_difference(differences: np.ndarray, alternative: Literal["less", "greater"]) -> MeanDifference:
    """The mean of paired per-image `differences` [N] (NaN entries left out), its 95% t interval and the one-sided
    t test that the mean is `alternative` than 0."""
    values = np.asarray(differences, dtype=np.float64)
    values = values[np.isfinite(values)]
    mean = float(values.mean()) if len(values) else None
    if not varies(values):
        return MeanDifference(images=len(values), mean=mean, ci95=None, alternative=alternative, p_value=None)
    return MeanDifference(images=len(values), mean=mean, ci95=t_interval(ttest_1samp(values, 0.0)),
                          alternative=alternative,
                          p_value=_finite(ttest_1samp(values, 0.0, alternative=alternative).pvalue))
