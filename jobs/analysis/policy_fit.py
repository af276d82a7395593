"""Fitting the correction policy (`miscause.policy` holds its format and the rule the service applies).

Fitting, on the validation split only: for each setting of the sweep and each predicted class, the threshold
that maximises (errors the erasure corrects) - (correct answers it breaks) among images at or below it; a rule
is kept when that net gain is at least `min_gain` images. The setting with the largest total gain wins (ties:
the default setting, then the smaller setting). Evaluated once on the test split.
"""

from __future__ import annotations

import numpy as np
import torch

from miscause.jobs.analysis.erasure import SplitRun
from miscause.jobs.analysis.significance import bootstrap_mean_interval
from miscause.policy import FORMAT_VERSION, Policy


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


def fit_policy(run: SplitRun, default: tuple[float, int], min_gain: int) -> dict:
    """The best setting and its rules on a (validation) run: {"setting", "rules": {class: (threshold, gain)},
    "gain", "n"}."""
    k = len(run.classes)
    confidence, predicted = run.confidence, run.predicted
    fits = []
    for index, setting in enumerate(run.settings):
        rules = class_rules(confidence, predicted, run.saliency_predicted[index], run.labels, k, min_gain)
        gain = sum(g for _, g in rules.values())
        fits.append((-gain, setting != default, setting, rules))
    negative_gain, _, setting, rules = min(fits, key=lambda fit: fit[:3])
    if not rules:
        setting = default
    return {"setting": setting, "rules": rules, "gain": -negative_gain, "n": len(run.labels)}


def evaluate_policy(fit: dict, run: SplitRun, seed: int = 0) -> dict:
    """Accuracy before and after the policy on a (test) run, the net change and its 95% bootstrap interval."""
    index = run.settings.index(fit["setting"])
    rules = {c: threshold for c, (threshold, _) in fit["rules"].items()}
    confidence, predicted, labels = run.confidence, run.predicted, run.labels
    corrected = apply_rules(rules, confidence, predicted, run.saliency_predicted[index])
    before, after = predicted == labels, corrected == labels
    gains, losses, n = int((~before & after).sum()), int((before & ~after).sum()), len(labels)
    low, high = bootstrap_mean_interval(gains, losses, n, seed=seed)
    return {"split": run.split, "n": n, "accuracy_before": float(before.mean()),
            "accuracy_after": float(after.mean()), "changed": int((corrected != predicted).sum()),
            "corrected": gains, "broken": losses, "net_change": (gains - losses) / n, "ci95": [low, high]}


def policy_document(model: str, fit: dict, test: dict, classes: tuple[str, ...], saliency_method: str,
                    fill: list[float], fitted_on: dict, created: str, versions: dict) -> dict:
    """The `policy.json` content (layout in docs/analysis.md)."""
    top_percent, box = fit["setting"]
    return {
        "version": FORMAT_VERSION,
        "model": model,
        "saliency_method": saliency_method,
        "top_percent": top_percent,
        "box": box,
        "fill": fill,
        "rules": [{"pred": classes[c], "max_confidence": threshold}
                  for c, (threshold, _) in sorted(fit["rules"].items())],
        "fitted_on": {**fitted_on, "n": fit["n"], "net_gain": fit["gain"],
                      "rule_gains": {classes[c]: gain for c, (_, gain) in sorted(fit["rules"].items())}},
        "test": test,
        "created": created,
        "versions": versions,
    }
