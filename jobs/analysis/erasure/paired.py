"""Means of per-image values with their 95% t intervals (scipy's one-sample t test), for the saliency checks:
the similarity of two maps of each image, and paired per-image differences with a one-sided test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
    """A paired per-image difference: its mean over the images where it is defined, the 95% t interval, and the
    one-sided p-value of the t test in the stated direction (`alternative`: `less` or `greater` than 0)."""

    images: int
    mean: float | None
    ci95: tuple[float | None, float | None]
    alternative: str
    p_value: float | None


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def mean_interval(values: np.ndarray) -> MeanInterval:
    """The mean of the defined `values` [N] and its 95% t interval; NaN entries counted as undefined."""
    values = np.asarray(values, dtype=np.float64)
    defined = values[np.isfinite(values)]
    if len(defined) == 0:
        return MeanInterval(images=len(values), undefined=len(values), mean=None, median=None, ci95=(None, None))
    ci = (None, None)
    if len(defined) >= 2 and np.ptp(defined) > 0:
        interval = ttest_1samp(defined, 0.0).confidence_interval(LEVEL)
        ci = (_finite(interval.low), _finite(interval.high))
    return MeanInterval(images=len(values), undefined=len(values) - len(defined), mean=float(defined.mean()),
                        median=float(np.median(defined)), ci95=ci)


def mean_difference(differences: np.ndarray, alternative: Literal["less", "greater"]) -> MeanDifference:
    """The mean of paired per-image `differences` [N] (NaN entries left out), its 95% t interval and the one-sided
    t test that the mean is `alternative` than 0."""
    values = np.asarray(differences, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return MeanDifference(images=len(values), mean=_finite(values.mean()) if len(values) else None,
                              ci95=(None, None), alternative=alternative, p_value=None)
    interval = ttest_1samp(values, 0.0).confidence_interval(LEVEL)
    p_value = ttest_1samp(values, 0.0, alternative=alternative).pvalue
    return MeanDifference(images=len(values), mean=float(values.mean()),
                          ci95=(_finite(interval.low), _finite(interval.high)), alternative=alternative,
                          p_value=_finite(p_value))
