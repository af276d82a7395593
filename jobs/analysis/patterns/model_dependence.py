"""Whether a confusion depends on the model: a paired test across models on the same images, calibrated by seeds.

For an ordered pair (true i, predicted j) every model gives, per image of class i, the indicator "predicted as j".
- Heterogeneity (always, two or more models): Cochran's Q (Cochran 1950) over those indicators of all M models,
  chi-square with M-1 degrees of freedom. It is paired: an image hard for every model counts for none, so only
  disagreements between models on the same images enter.
- Seed calibration (with replicate groups): the one-way analysis of variance of the models' rates
  P(pred = j | true = i) with the architecture as the factor. The within mean square pools the seed-to-seed
  spread inside the replicate groups (assumed alike for every architecture), so F asks whether the rates of
  different architectures lie further apart than those of seeds of one architecture. Since all models see the same
  images, the seeds' spread holds exactly the noise that tells models apart on them.
Each family of K(K-1) p-values is corrected with the analysis's correction. A pair is heterogeneous when Q's
adjusted p-value is at most alpha, with replicate groups also F's (an intersection-union test, Berger 1982, so
the pair's level stays alpha), and some model holds at least `min_count` such errors.

Power: per pair, the smallest difference in the rate between two models that the test detects with 80% power at
the per-pair level alpha/m (m = K(K-1), the level Holm and Benjamini-Hochberg require of the smallest p-value;
alpha without correction), from `significance.min_detectable_difference` on the class's image count and the
models' mean rate; also given in images and as a share of the class's errors (the conditional-probability scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from miscause.jobs.analysis.patterns.confusion import class_errors
from miscause.jobs.analysis.patterns.significance import adjust, between_within_f, cochran_q, min_detectable_difference

POWER = 0.8


@dataclass(kw_only=True)
class ModelDependence:
    """Per-pair statistics [K,K] (diagonal unused) of the model-dependence test and its power."""

    q: np.ndarray
    q_p: np.ndarray
    q_adjusted: np.ndarray
    f: np.ndarray
    f_p: np.ndarray
    f_adjusted: np.ndarray
    df_between: int
    df_within: int
    calibrated: bool
    heterogeneous: np.ndarray
    mdd: np.ndarray
    mdd_level: float
    class_images: np.ndarray
    class_error_rate: np.ndarray

    def record(self, i: int, j: int) -> dict:
        """The pair's entry of metrics.json."""
        images = int(self.class_images[i])
        mdd = float(self.mdd[i, j])
        defined = np.isfinite(mdd)
        rate = self.class_error_rate[i]
        return {"q": float(self.q[i, j]), "q_p": float(self.q_p[i, j]), "q_adjusted": float(self.q_adjusted[i, j]),
                "f": float(self.f[i, j]) if self.calibrated else None,
                "f_p": float(self.f_p[i, j]) if self.calibrated else None,
                "f_adjusted": float(self.f_adjusted[i, j]) if self.calibrated else None,
                "heterogeneous": bool(self.heterogeneous[i, j]), "class_images": images,
                "min_detectable": {"rate": mdd if defined else None,
                                   "images": mdd * images if defined else None,
                                   "conditional": mdd / rate if defined and rate > 0 and mdd <= rate else None}}


def model_dependence(labels: np.ndarray, predicted: list[np.ndarray], counts: list[np.ndarray],
                     architecture: list[str] | None, alpha: float, correction: str,
                     min_count: int) -> ModelDependence:
    """The test for every ordered pair, from the true labels [N], each model's predictions [N] and confusion
    counts [K,K], and (with replicate groups) each model's architecture."""
    k, m = counts[0].shape[0], len(counts)
    stack = np.stack(counts).astype(float)
    votes = np.zeros((len(labels), k))
    for p in predicted:
        votes[np.arange(len(labels)), p] += 1
    row_square = np.zeros((k, k))
    np.add.at(row_square, labels, votes ** 2)
    class_images = np.bincount(labels, minlength=k)
    off = ~np.eye(k, dtype=bool)
    q, q_p, f, f_p = np.zeros((k, k)), np.ones((k, k)), np.full((k, k), np.nan), np.ones((k, k))
    df_between = df_within = 0
    for i, j in zip(*np.nonzero(off), strict=True):
        q[i, j], q_p[i, j] = cochran_q(stack[:, i, j], row_square[i, j])
        if architecture is not None and class_images[i]:
            f[i, j], f_p[i, j], df_between, df_within = between_within_f(stack[:, i, j] / class_images[i],
                                                                         np.asarray(architecture))
    q_adjusted, f_adjusted = np.ones((k, k)), np.ones((k, k))
    q_adjusted[off] = adjust(q_p[off], correction)
    f_adjusted[off] = adjust(f_p[off], correction)
    calibrated = architecture is not None
    heterogeneous = off & (q_adjusted <= alpha) & (stack.max(axis=0) >= min_count)
    if calibrated:
        heterogeneous &= f_adjusted <= alpha
    level = alpha if correction == "none" else alpha / int(off.sum())
    mean_rate = np.divide(stack.mean(axis=0), class_images[:, None], out=np.zeros((k, k)),
                          where=class_images[:, None] > 0)
    mdd = np.full((k, k), np.nan)
    if m >= 2:
        for i, j in zip(*np.nonzero(off), strict=True):
            value = min_detectable_difference(int(class_images[i]), float(mean_rate[i, j]), level, POWER)
            mdd[i, j] = np.nan if value is None else value
    error_rate = np.divide(np.mean([class_errors(c) for c in counts], axis=0), class_images,
                           out=np.zeros(k), where=class_images > 0)
    return ModelDependence(q=q, q_p=q_p, q_adjusted=q_adjusted, f=f, f_p=f_p, f_adjusted=f_adjusted,
                           df_between=df_between, df_within=df_within, calibrated=calibrated,
                           heterogeneous=heterogeneous, mdd=mdd, mdd_level=level, class_images=class_images,
                           class_error_rate=error_rate)
