"""Fitting the correction policy (`miscause.policy` holds its format and the rule the service applies).

Fitting: for each setting of the sweep and each predicted class, the threshold that maximises (errors the erasure
corrects) - (correct answers it breaks) among images at or below it; a rule is kept when that net gain is at least
`min_gain` images. The setting with the largest total gain wins (ties: the default setting, then the smaller
setting). Only images the model never trained on are used (`honest_fit`): the validation split for a model
trained on `train`, else cross-fitting over folds of the test split.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch

from miscause.erasure import ErasureSettings
from miscause.jobs.analysis.erasure.run import SplitRun
from miscause.jobs.analysis.patterns.significance import bootstrap_mean_interval
from miscause.policy import FORMAT_VERSION, Policy

FOLDS = 5


def class_rules(confidence: np.ndarray, predicted: np.ndarray, erased: np.ndarray, labels: np.ndarray,
                k: int, min_gain: int) -> dict[int, tuple[float, int]]:
    """Predicted class -> (max_confidence, net gain in images) for every class worth a rule."""
    gain_per_image = (erased == labels).astype(int) - (predicted == labels).astype(int)
    rules = {}
    for c in range(k):
        members = np.flatnonzero(predicted == c)
        if len(members) == 0:
            continue
        order = members[np.argsort(confidence[members], kind="stable")]
        q = confidence[order]
        total = np.cumsum(gain_per_image[order])
        ends = np.flatnonzero(np.append(q[1:] != q[:-1], True))
        best = ends[np.argmax(total[ends])]
        if total[best] >= min_gain:
            rules[c] = (float(q[best]), int(total[best]))
    return rules


def apply_rules(rules: dict[int, float], confidence: np.ndarray, predicted: np.ndarray,
                erased: np.ndarray) -> np.ndarray:
    """The service's corrected labels for numpy arrays: `Policy.correct` with these rules."""
    policy = Policy.from_rules(rules, max(int(predicted.max()), max(rules, default=0)) + 1)
    return policy.correct(torch.from_numpy(predicted), torch.from_numpy(confidence),
                          torch.from_numpy(erased)).numpy()


def fit_policy(run: SplitRun, default: tuple[float, int], min_gain: int, rows: np.ndarray | None = None) -> dict:
    """The best setting and its rules on a run's `rows` (all by default): {"setting", "rules": {class: (threshold,
    gain)}, "gain", "n"}."""
    rows = np.arange(len(run.labels)) if rows is None else rows
    k = len(run.classes)
    confidence, predicted, labels = run.confidence[rows], run.predicted[rows], run.labels[rows]
    fits = []
    for index, setting in enumerate(run.settings):
        rules = class_rules(confidence, predicted, run.saliency_predicted[index][rows], labels, k, min_gain)
        gain = sum(g for _, g in rules.values())
        fits.append((-gain, setting != default, setting, rules))
    negative_gain, _, setting, rules = min(fits, key=lambda fit: fit[:3])
    if not rules:
        setting = default
    return {"setting": setting, "rules": rules, "gain": -negative_gain, "n": len(rows)}


def policy_labels(fit: dict, run: SplitRun, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the policy's labels, every image erased) for a run's `rows`, at the fit's setting."""
    erased = run.saliency_predicted[run.settings.index(fit["setting"])][rows]
    rules = {c: threshold for c, (threshold, _) in fit["rules"].items()}
    return apply_rules(rules, run.confidence[rows], run.predicted[rows], erased), erased


def score(run: SplitRun, corrected: np.ndarray, blanket: np.ndarray, seed: int) -> dict:
    """Accuracy before and after the policy, the net change and its 95% bootstrap interval; accuracy with every
    image erased, and from it the break-even error share: the share of errors among the images a gate selects
    above which erasing them gains (corrected rate c among errors, broken rate b among correct answers:
    e c > (1 - e) b, so e > b / (b + c); null when erasure neither corrects nor breaks)."""
    predicted, labels = run.predicted, run.labels
    before, after = predicted == labels, corrected == labels
    gains, losses, n = int((~before & after).sum()), int((before & ~after).sum()), len(labels)
    low, high = bootstrap_mean_interval(gains, losses, n, seed=seed)
    fixed = float((blanket[~before] == labels[~before]).mean()) if (~before).any() else 0.0
    broken = float((blanket[before] != labels[before]).mean()) if before.any() else 0.0
    return {"split": run.split, "n": n, "accuracy_before": float(before.mean()),
            "accuracy_after": float(after.mean()), "changed": int((corrected != predicted).sum()),
            "corrected": gains, "broken": losses, "net_change": (gains - losses) / n, "ci95": [low, high],
            "accuracy_blanket": float((blanket == labels).mean()), "blanket_corrected_rate": fixed,
            "blanket_broken_rate": broken,
            "break_even_error_share": broken / (broken + fixed) if broken + fixed > 0 else None}


def evaluate_policy(fit: dict, run: SplitRun, seed: int = 0) -> dict:
    """The policy's score on a (test) run it was not fitted on."""
    rows = np.arange(len(run.labels))
    return score(run, *policy_labels(fit, run, rows), seed)


def fold_rows(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """`folds` disjoint sets of row numbers, sorted, that together hold 0..n-1 (a seeded random partition)."""
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, folds)]


def cross_fit(run: SplitRun, default: tuple[float, int], min_gain: int, folds: int, seed: int) -> dict:
    """Cross-fitting (Chernozhukov et al. 2018): each fold is scored by the policy fitted on the other folds, so
    every image's corrected label comes from a policy that never saw it; the score is over all images."""
    corrected, blanket = np.empty_like(run.labels), np.empty_like(run.labels)
    parts = []
    for rows in fold_rows(len(run.labels), min(folds, len(run.labels)), seed):
        fit = fit_policy(run, default, min_gain, np.setdiff1d(np.arange(len(run.labels)), rows))
        corrected[rows], blanket[rows] = policy_labels(fit, run, rows)
        parts.append({"n": len(rows), "fitted_n": fit["n"], "setting": list(fit["setting"]),
                      "rules": {run.classes[c]: threshold for c, (threshold, _) in sorted(fit["rules"].items())}})
    return {**score(run, corrected, blanket, seed), "folds": parts}


def honest_fit(val: SplitRun, test: SplitRun, training_split: str | None, default: tuple[float, int],
               min_gain: int, seed: int, folds: int = FOLDS) -> tuple[dict, dict, dict]:
    """(fit, test score, how it was fitted) on images the model never trained on.

    A model trained on the `train` split never saw the validation split: the policy is fitted there and scored
    once on the test split. Otherwise (trained on `trainval`, or its training split unknown) the validation
    images may be training images, so the policy is cross-fitted over `folds` folds of the test split for its
    score, and the policy written is the one fitted on the whole test split."""
    if training_split == "train":
        fit = fit_policy(val, default, min_gain)
        return fit, {**evaluate_policy(fit, test, seed), "method": "validation"}, {"split": "val",
                                                                                   "method": "validation"}
    result = cross_fit(test, default, min_gain, folds, seed)
    reason = (f"trained on the {training_split!r} split, which holds the validation images" if training_split
              else "its training split is not recorded")
    return (fit_policy(test, default, min_gain), {**result, "method": "cross-fit"},
            {"split": "test", "method": "cross-fit", "folds": folds, "reason": reason})


def policy_document(model: str, fit: dict, test: dict, classes: tuple[str, ...], saliency_method: str,
                    fill: list[float], fitted_on: dict, created: str, versions: dict) -> dict:
    """The `policy.json` content (layout in docs/analysis.md)."""
    top_percent, box = fit["setting"]
    return {
        "version": FORMAT_VERSION,
        "model": model,
        **asdict(ErasureSettings(top_percent=top_percent, box=box, fill=fill, saliency_method=saliency_method)),
        "rules": [{"pred": classes[c], "max_confidence": threshold}
                  for c, (threshold, _) in sorted(fit["rules"].items())],
        "fitted_on": {**fitted_on, "n": fit["n"], "net_gain": fit["gain"],
                      "rule_gains": {classes[c]: gain for c, (_, gain) in sorted(fit["rules"].items())}},
        "test": test,
        "created": created,
        "versions": versions,
    }
