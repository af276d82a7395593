"""The correction policy's honest selection on planted outcomes: no signal gives no rule, a real effect is found
and gains on unseen images, and the choice is fixed by its seed."""

from __future__ import annotations

import numpy as np

from miscause.jobs.analysis.erasure.policy_selection import honest_fit, select
from miscause.jobs.analysis.erasure.run import SplitRun

SETTINGS = [(1.0, 1), (5.0, 3), (20.0, 5)]
K = 5


def planted(n: int, effect: bool, seed: int) -> SplitRun:
    """K classes, 30% errors, confidence unrelated to correctness. Erasure corrects 35% of errors and breaks 15% of
    correct answers, which cancel in expectation at every confidence (0.3 x 0.35 = 0.7 x 0.15): no signal. With
    `effect`, at the setting (20, 5) it also corrects every error predicted as class 0 with confidence below 0.6."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, n)
    wrong = rng.random(n) < 0.3
    predicted = np.where(wrong, (labels + rng.integers(1, K, n)) % K, labels)
    confidence = rng.uniform(0.3, 1.0, n)
    logits = np.log(np.full((n, K), (1 - confidence[:, None]) / (K - 1)))
    logits[np.arange(n), predicted] = np.log(confidence)
    after = np.repeat(predicted[None], len(SETTINGS), axis=0)
    for index, setting in enumerate(SETTINGS):
        draw = rng.random(n)
        fixed, broken = wrong & (draw < 0.35), ~wrong & (draw < 0.15)
        if effect and setting == (20.0, 5):
            fixed |= wrong & (predicted == 0) & (confidence < 0.6)
        after[index, fixed] = labels[fixed]
        after[index, broken] = (labels[broken] + 1) % K
    pixels = np.zeros((len(SETTINGS), n), int)
    return SplitRun(model="m", split="val", classes=tuple(f"c{c}" for c in range(K)), positions=np.arange(n),
                    labels=labels, logits=logits.astype(np.float32), settings=SETTINGS, saliency_predicted=after,
                    random_predicted=after, saliency_pixels=pixels, random_pixels=pixels,
                    error_rows=np.flatnonzero(wrong), error_maps=np.zeros((0, 2, 2), np.float32))


def test_no_signal_corrects_nothing() -> None:
    for seed in range(3):
        fit = honest_fit(planted(2000, False, seed), planted(2000, False, 100 + seed), "train", (5.0, 3),
                         min_gain=3, seed=seed)
        low, high = fit.selection["expected"]["ci95"]
        assert low <= 0 <= high or not fit.selection["chosen"]["rules"]
        assert not fit.selection["applied"] and fit.written["rules"] == {}
        assert fit.test["corrected"] == fit.test["broken"] == 0 and fit.test["ci95"] == [0.0, 0.0]
        assert ("withheld" in fit.test) == bool(fit.selection["chosen"]["rules"])


def test_a_planted_effect_is_found_and_gains_on_test() -> None:
    val, test = planted(2000, True, 1), planted(4000, True, 2)
    fit = honest_fit(val, test, "train", (5.0, 3), min_gain=3, seed=0)
    assert fit.selection["applied"] and fit.selection["expected"]["ci95"][0] > 0
    assert fit.written["setting"] == (20.0, 5) and 0 in fit.written["rules"]
    threshold, _ = fit.written["rules"][0]
    assert 0.5 < threshold < 0.7
    assert fit.test["method"] == "validation" and fit.test["net_change"] > 0 and fit.test["ci95"][0] > 0
    assert "withheld" not in fit.test


def test_the_selection_is_fixed_by_its_seed() -> None:
    val, test = planted(1000, True, 5), planted(1000, True, 6)
    first, again = (honest_fit(val, test, "train", (5.0, 3), min_gain=3, seed=7) for _ in range(2))
    assert first == again
    rows = np.arange(len(val.labels))
    assert select(val, rows, (5.0, 3), 3, 5, [7, 1]) == select(val, rows, (5.0, 3), 3, 5, [7, 1])
