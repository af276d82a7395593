"""The erasure study's endpoints: saliency erasure against a control on the same images, as differences with
95% intervals (docs/analysis.md, "Primary endpoint").

Per image the saliency erasure's outcome (1 or 0) is paired with the control's mean over its draws:
- correction: among the errors, gave the true class; its mean difference is the difference in correction rate;
- net accuracy: the same over every image (a correct answer kept counts as correct);
- specificity: a flip is a changed prediction; the mean paired difference in flips among the errors minus that
  among the correct answers, i.e. (flip rate among errors - among correct) for saliency minus the same for the
  control: positive when saliency erasure changes errors more than it changes correct answers, beyond the control.
Intervals and p-values from scipy: the one-sample t test of the paired differences (`paired.mean_difference`),
Welch's two-sample t test of the interaction (as the same `paired.MeanDifference`); the correction's equivalence
by two one-sided tests against `MARGIN`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from miscause.jobs.analysis.erasure.paired import MeanDifference, mean_difference, t_interval, varies
from miscause.jobs.analysis.erasure.run import Draws

MARGIN = 0.03  # equivalence margin of the correction difference: 3 points of the errors
EQUIVALENCE_ALPHA = 0.05


@dataclass(frozen=True, kw_only=True)
class Equivalence:
    """Two one-sided tests that the correction difference lies within +-`margin`: the larger p-value, the 90%
    interval, and whether equivalence is shown at `EQUIVALENCE_ALPHA`."""

    margin: float
    ci90: tuple[float, float] | None
    p_value: float | None
    equivalent: bool


@dataclass(frozen=True, kw_only=True)
class Rates:
    """One erasure's rates: corrected and flipped among the errors, flipped (broken) among the correct answers."""

    corrected: float | None
    flipped_errors: float | None
    flipped_correct: float | None


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """Saliency erasure against one control (`draws` per image) on one split's images, `left_out` of them
    without that control (the shifted control where no offset avoids the saliency mask)."""

    control: str
    draws: int
    left_out: int
    correction: MeanDifference
    specificity: MeanDifference
    net_accuracy: MeanDifference
    equivalence: Equivalence
    saliency: Rates
    control_rates: Rates


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def interaction_effect(first: np.ndarray, second: np.ndarray) -> MeanDifference:
    """mean(first) - mean(second) of independent groups, Welch's interval and one-sided p-value of "> 0" (scipy)."""
    estimate = None if not (len(first) and len(second)) else float(first.mean() - second.mean())
    if not varies(first, second):
        return MeanDifference(images=len(first) + len(second), mean=estimate, ci95=None, alternative="greater",
                              p_value=None)
    result = stats.ttest_ind(first, second, equal_var=False, alternative="greater")
    return MeanDifference(images=len(first) + len(second), mean=estimate,
                          ci95=t_interval(stats.ttest_ind(first, second, equal_var=False)),
                          alternative="greater", p_value=float(result.pvalue))


def equivalence(differences: np.ndarray, margin: float = MARGIN) -> Equivalence:
    """Two one-sided t tests of the mean paired difference against -margin and +margin (scipy)."""
    if not varies(differences):
        return Equivalence(margin=margin, ci90=None, p_value=None, equivalent=False)
    p = max(stats.ttest_1samp(differences, -margin, alternative="greater").pvalue,
            stats.ttest_1samp(differences, margin, alternative="less").pvalue)
    return Equivalence(margin=margin, ci90=t_interval(stats.ttest_1samp(differences, 0.0), 1 - 2 * EQUIVALENCE_ALPHA),
                       p_value=float(p), equivalent=bool(p < EQUIVALENCE_ALPHA))


def _rates(wrong: np.ndarray, corrected: np.ndarray, flipped: np.ndarray) -> Rates:
    return Rates(corrected=_mean(corrected[wrong]), flipped_errors=_mean(flipped[wrong]),
                 flipped_correct=_mean(flipped[~wrong]))


def endpoint(labels: np.ndarray, predicted: np.ndarray, saliency_after: np.ndarray, control: Draws,
             name: str) -> Endpoint:
    """Saliency erasure (classes after it, [N]) against the control `name`'s draws on the same images (those
    where the control exists)."""
    has = control.count > 0
    labels, predicted, saliency_after, control = labels[has], predicted[has], saliency_after[has], control.rows(has)
    wrong = predicted != labels
    saliency_corrected = (saliency_after == labels).astype(np.float64)
    saliency_flipped = (saliency_after != predicted).astype(np.float64)
    control_corrected = control.corrected / control.count
    control_flipped = control.changed / control.count
    corrected, flipped = saliency_corrected - control_corrected, saliency_flipped - control_flipped
    return Endpoint(control=name, draws=control.drawn, left_out=int((~has).sum()),
                    correction=mean_difference(corrected[wrong], "greater"),
                    specificity=interaction_effect(flipped[wrong], flipped[~wrong]),
                    net_accuracy=mean_difference(corrected, "greater"), equivalence=equivalence(corrected[wrong]),
                    saliency=_rates(wrong, saliency_corrected, saliency_flipped),
                    control_rates=_rates(wrong, control_corrected, control_flipped))


def verdict(primary: Endpoint) -> str:
    """The pre-registered decision: `supported` when both the correction and the specificity intervals lie above
    0; `absent` when the correction is shown equivalent to none; `undetermined` otherwise."""
    if primary.correction.positive and primary.specificity.positive:
        return "supported"
    return "absent" if primary.equivalence.equivalent else "undetermined"
