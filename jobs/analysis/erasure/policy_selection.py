"""Choosing the correction policy honestly: nested cross-validation inside the split it is fitted on.

Picking the setting and thresholds with the largest in-sample gain finds gains where there are none (the best of
many noisy sums), so the choice is itself cross-validated. The selection procedure (`select`) on a set of images:
inner folds fit every setting's class rules (`policy_fit`) on the other inner folds and score them on the held-out
one; a class keeps its rule at a setting only where, over the held-out folds, the rule corrected significantly
more images than it broke (exact one-sided McNemar test at `KEEP_LEVEL`), and the setting whose kept rules gained
most wins (ties: the default setting, then the smaller); nothing kept: no rule. That setting's
rules for those classes are then fitted on all the images. The outer folds (`cross_fit`) run the whole procedure
on all but one fold and label the held-out fold with its choice, so every image is labelled by a policy chosen
without it: their net gain is the gain EXPECTED of the procedure, with its 95% interval. The policy written is the
procedure's choice on the whole split, and only where that interval lies above zero; otherwise it has no rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from miscause.jobs.analysis.erasure.policy_fit import (
    evaluate_policy,
    fold_rows,
    net_gain,
    policy_labels,
    rule_labels,
    rule_list,
    score,
    setting_rules,
)
from miscause.jobs.analysis.erasure.run import SplitRun
from miscause.jobs.analysis.patterns.significance import mcnemar_greater

FOLDS = 5  # outer and inner folds alike
KEEP_LEVEL = 0.05  # a class keeps its rule where it corrected more than it broke on held-out images at this level


def class_changes(run: SplitRun, rows: np.ndarray, corrected: np.ndarray) -> np.ndarray:
    """[2, K]: per predicted class, the images of the run's `rows` that the labels `corrected` correct and break."""
    predicted, labels = run.predicted[rows], run.labels[rows]
    right, was = corrected == labels, predicted == labels
    k = len(run.classes)
    return np.stack([np.bincount(predicted[right & ~was], minlength=k),
                     np.bincount(predicted[was & ~right], minlength=k)])


def select(run: SplitRun, rows: np.ndarray, default: tuple[float, int], min_gain: int, folds: int,
           seed: int | list[int]) -> dict:
    """The selection procedure on the run's `rows`, its inner folds seeded with `seed`: {"setting", "rules",
    "gain" (the rules' net gain on `rows`), "held_out_gain" (what the chosen setting's kept rules gained on the
    inner held-out folds), "n"}. A class keeps its rule at a setting where, on the held-out folds, the rule
    corrected more images than it broke by the exact one-sided McNemar test at level `KEEP_LEVEL`."""
    changes = np.zeros((len(run.settings), 2, len(run.classes)), dtype=int)
    for part in fold_rows(len(rows), min(folds, len(rows)), seed) if len(rows) >= 2 else []:
        fitting, scored = np.delete(rows, part), rows[part]
        for index in range(len(run.settings)):
            corrected, _ = rule_labels(run, index, setting_rules(run, index, fitting, min_gain), scored)
            changes[index] += class_changes(run, scored, corrected)
    held_out = changes[:, 0] - changes[:, 1]
    kept = np.vectorize(mcnemar_greater)(changes[:, 0], changes[:, 1]) <= KEEP_LEVEL
    totals = (held_out * kept).sum(axis=1)
    best = min(range(len(run.settings)), key=lambda i: (-totals[i], run.settings[i] != default, run.settings[i]))
    rules = ({c: rule for c, rule in setting_rules(run, best, rows, min_gain).items() if kept[best, c]}
             if totals[best] > 0 else {})
    return {"setting": run.settings[best] if rules else default, "rules": rules,
            "gain": sum(gain for _, gain in rules.values()), "held_out_gain": int(totals[best]) if rules else 0,
            "n": len(rows)}


def cross_fit(run: SplitRun, default: tuple[float, int], min_gain: int, folds: int,
              seed: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Cross-fitting (Chernozhukov et al. 2018), the outer folds: each fold labelled by the policy `select` chose
    on the other folds, so no image is labelled by a choice that saw it. (labels, every image erased at its fold's
    setting, each fold's choice)."""
    corrected, blanket = np.empty_like(run.labels), np.empty_like(run.labels)
    everything, parts = np.arange(len(run.labels)), []
    for number, rows in enumerate(fold_rows(len(run.labels), min(folds, len(run.labels)), seed)):
        fit = select(run, np.setdiff1d(everything, rows), default, min_gain, folds, [seed, number + 1])
        corrected[rows], blanket[rows] = policy_labels(fit, run, rows)
        parts.append({"n": len(rows), "fitted_n": fit["n"], "setting": list(fit["setting"]),
                      "rules": {run.classes[c]: threshold for c, (threshold, _) in sorted(fit["rules"].items())},
                      "held_out_gain": fit["held_out_gain"]})
    return corrected, blanket, parts


def decision(chosen: dict, expected: dict) -> tuple[bool, str]:
    """(whether the chosen rules are applied, why): only where the expected gain's 95% interval lies above 0."""
    if not chosen["rules"]:
        return False, "no rule: none corrected significantly more held-out images than it broke"
    low, high = (100 * bound for bound in expected["ci95"])
    if low <= 0:
        return False, (f"withheld: the expected gain's 95% interval [{low:+.2f}, {high:+.2f}] points does not "
                       "exclude zero")
    return True, f"applied: the expected gain's 95% interval [{low:+.2f}, {high:+.2f}] points lies above zero"


@dataclass(frozen=True, kw_only=True)
class HonestFit:
    """A policy chosen on images the model never trained on: `written` (the fit the service applies), `selection`
    (how it was chosen, its expected gain and the decision), `test` (its score on the test split) and
    `fitted_on` (the split and method)."""

    written: dict
    selection: dict
    test: dict
    fitted_on: dict


def honest_fit(val: SplitRun, test: SplitRun, training_split: str | None, default: tuple[float, int],
               min_gain: int, seed: int, folds: int = FOLDS) -> HonestFit:
    """The policy chosen by nested cross-validation on images the model never trained on, and its scores.

    A model trained on the `train` split never saw the validation split: the policy is chosen there and its
    realised gain measured once on the test split (where rules are withheld, also the gain they would have had).
    Otherwise (trained on `trainval`, or its training split unknown) the validation images may be training
    images, so it is chosen on the test split, whose cross-fitted score is then the expected gain; no realised
    gain is measured."""
    validation = training_split == "train"
    fitting = val if validation else test
    corrected, blanket, parts = cross_fit(fitting, default, min_gain, folds, seed)
    expected = {"split": fitting.split, **net_gain(fitting.predicted, fitting.labels, corrected, seed),
                "folds": parts}
    chosen = select(fitting, np.arange(len(fitting.labels)), default, min_gain, folds, [seed, 0])
    applied, reason = decision(chosen, expected)
    written = chosen if applied else {**chosen, "setting": default, "rules": {}, "gain": 0, "held_out_gain": 0}
    top_percent, box = chosen["setting"]
    selection = {"method": "nested cross-validation", "folds": folds, "inner_folds": folds, "keep_level": KEEP_LEVEL,
                 "expected": expected,
                 "chosen": {"top_percent": top_percent, "box": box,
                            "rules": rule_list(chosen["rules"], fitting.classes),
                            "net_gain": chosen["gain"], "held_out_gain": chosen["held_out_gain"]},
                 "applied": applied, "reason": reason}
    if validation:
        realised = {**evaluate_policy(written, test, seed), "method": "validation"}
        if chosen["rules"] and not applied:
            labels, _ = policy_labels(chosen, test, np.arange(len(test.labels)))
            realised["withheld"] = net_gain(test.predicted, test.labels, labels, seed)
        return HonestFit(written=written, selection=selection, test=realised,
                         fitted_on={"split": "val", "method": "validation"})
    why = (f"trained on the {training_split!r} split, which holds the validation images" if training_split
           else "its training split is not recorded")
    return HonestFit(written=written, selection=selection,
                     test={**score(test, corrected, blanket, seed), "method": "cross-fit"},
                     fitted_on={"split": "test", "method": "cross-fit", "folds": folds, "reason": why})
