"""The erasure study's endpoints on planted outcomes: the sign and size of the correction difference and of the
specificity interaction are recovered with intervals that cover the planted values, and the verdict follows."""

from __future__ import annotations

import numpy as np
import pytest

from miscause.jobs.analysis.erasure.endpoints import MARGIN, endpoint, verdict
from miscause.jobs.analysis.erasure.paired import mean_difference
from miscause.jobs.analysis.erasure.run import Draws

N_ERRORS, N_CORRECT, DRAWS = 1500, 3000, 10


def planted(seed: int, saliency_fix: float, control_fix: float, saliency_break: float, control_break: float):
    """Labels 0, errors predicted 1; saliency erasure corrects errors with probability `saliency_fix` and breaks
    correct answers with `saliency_break`, each control draw with `control_fix` and `control_break`."""
    rng = np.random.default_rng(seed)
    n = N_ERRORS + N_CORRECT
    labels = np.zeros(n, int)
    predicted = np.r_[np.ones(N_ERRORS, int), np.zeros(N_CORRECT, int)]
    wrong = predicted != labels
    fix, brk = np.where(wrong, saliency_fix, 0.0), np.where(wrong, 0.0, saliency_break)
    u = rng.random(n)
    saliency = np.where(u < fix, 0, np.where(u < fix + brk, 2, predicted))
    draws = rng.random((DRAWS, n))
    fix, brk = np.where(wrong, control_fix, 0.0), np.where(wrong, 0.0, control_break)
    control = np.where(draws < fix, 0, np.where(draws < fix + brk, 2, predicted))
    return labels, predicted, saliency, Draws.of_classes(labels, predicted, control)


def covers(effect, value: float) -> bool:
    return effect.ci95[0] <= value <= effect.ci95[1]


def test_a_planted_specific_correction_is_found_with_its_size() -> None:
    # errors: 0.40 corrected by saliency, 0.15 by the control; correct answers: 0.10 broken by both
    labels, predicted, saliency, control = planted(0, 0.40, 0.15, 0.10, 0.10)
    result = endpoint(labels, predicted, saliency, control, "matched")
    assert result.correction.images == N_ERRORS and result.draws == DRAWS and result.left_out == 0
    assert result.correction.positive and covers(result.correction, 0.25) and result.correction.p_value < 1e-6
    # flips: errors 0.40 vs 0.15 (every change here corrects), correct 0.10 vs 0.10: interaction 0.25
    assert result.specificity.positive and covers(result.specificity, 0.25)
    assert covers(result.net_accuracy, (0.25 * N_ERRORS) / (N_ERRORS + N_CORRECT))
    assert result.saliency.corrected == pytest.approx(0.40, abs=0.04)
    assert verdict(result) == "supported"


def test_erasure_that_flips_everything_alike_is_not_specific() -> None:
    # saliency erasure changes more of everything: errors 0.40 vs 0.15 corrected, correct 0.35 vs 0.10 broken
    labels, predicted, saliency, control = planted(1, 0.40, 0.15, 0.35, 0.10)
    result = endpoint(labels, predicted, saliency, control, "matched")
    assert result.correction.positive and covers(result.specificity, 0.0)
    assert not result.specificity.positive and verdict(result) == "undetermined"


def test_no_difference_is_shown_absent_and_a_negative_one_is_found() -> None:
    labels, predicted, saliency, control = planted(2, 0.20, 0.20, 0.05, 0.05)
    none = endpoint(labels, predicted, saliency, control, "matched")
    assert covers(none.correction, 0.0) and not none.correction.positive
    assert none.equivalence.equivalent and none.equivalence.margin == MARGIN and verdict(none) == "absent"
    assert -MARGIN < none.equivalence.ci90[0] and none.equivalence.ci90[1] < MARGIN
    labels, predicted, saliency, control = planted(3, 0.05, 0.25, 0.05, 0.05)
    worse = endpoint(labels, predicted, saliency, control, "matched")
    assert worse.correction.ci95[1] < 0 and covers(worse.correction, -0.20)
    assert worse.correction.p_value > 0.99 and verdict(worse) == "undetermined"


def test_images_without_the_control_are_left_out() -> None:
    labels, predicted, saliency, control = planted(4, 0.40, 0.15, 0.10, 0.10)
    missing = np.zeros(len(labels), bool)
    missing[::3] = True
    partial = Draws(count=np.where(missing, 0, control.count).astype(np.uint8),
                    corrected=np.where(missing, 0, control.corrected).astype(np.uint8),
                    changed=np.where(missing, 0, control.changed).astype(np.uint8))
    result = endpoint(labels, predicted, saliency, partial, "shifted")
    assert result.left_out == missing.sum() and result.correction.images == (~missing[:N_ERRORS]).sum()
    full = endpoint(labels[~missing], predicted[~missing], saliency[~missing], control.rows(~missing), "shifted")
    assert result.correction == full.correction and result.specificity == full.specificity


def test_undefined_effects_are_none_not_zero() -> None:
    constant = mean_difference(np.zeros(5), "greater")
    assert constant.mean == 0.0 and constant.ci95 is None and constant.p_value is None
    assert mean_difference(np.zeros(0), "greater").mean is None
