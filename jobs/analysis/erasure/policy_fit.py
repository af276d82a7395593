"""Fitting the correction policy on chosen images, applying it and scoring it (`policy_selection` chooses it
honestly; `miscause.policy` holds its format and the rule the service applies).

A rule for predicted class c at one erasure setting: the confidence threshold that maximises (errors the erasure
corrects) - (correct answers it breaks) among the images predicted as c at or below it; kept when that net gain is
at least `min_gain` images.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch

from miscause.erasure import ErasureSettings
from miscause.jobs.analysis.erasure.run import SplitRun
from miscause.jobs.analysis.patterns.significance import bootstrap_interval
from miscause.policy import FORMAT_VERSION, Policy

Rules = dict[int, tuple[float, int]]  # predicted class -> (max_confidence, net gain in images where fitted)


def class_rules(confidence: np.ndarray, predicted: np.ndarray, erased: np.ndarray, labels: np.ndarray,
                k: int, min_gain: int) -> Rules:
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


def setting_rules(run: SplitRun, index: int, rows: np.ndarray, min_gain: int) -> Rules:
    """The class rules at the run's setting `index`, fitted on the run's `rows`."""
    return class_rules(run.confidence[rows], run.predicted[rows], run.saliency_predicted[index][rows],
                       run.labels[rows], len(run.classes), min_gain)


def apply_rules(rules: dict[int, float], confidence: np.ndarray, predicted: np.ndarray,
                erased: np.ndarray) -> np.ndarray:
    """The service's corrected labels for numpy arrays: `Policy.correct` with these rules."""
    policy = Policy.from_rules(rules, max(int(predicted.max(initial=0)), max(rules, default=0)) + 1)
    return policy.correct(torch.from_numpy(predicted), torch.from_numpy(confidence),
                          torch.from_numpy(erased)).numpy()


def rule_labels(run: SplitRun, index: int, rules: Rules, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the labels `rules` at the run's setting `index` give its `rows`, every one of those images erased)."""
    erased = run.saliency_predicted[index][rows]
    thresholds = {c: threshold for c, (threshold, _) in rules.items()}
    return apply_rules(thresholds, run.confidence[rows], run.predicted[rows], erased), erased


def policy_labels(fit: dict, run: SplitRun, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the policy's labels, every image erased) for a run's `rows`, at the fit's setting."""
    return rule_labels(run, run.settings.index(fit["setting"]), fit["rules"], rows)


def net_gain(predicted: np.ndarray, labels: np.ndarray, corrected: np.ndarray, seed: int) -> dict:
    """Images the new labels correct and break, and the net change of accuracy with its 95% interval (paired
    bootstrap over images)."""
    per_image = (corrected == labels).astype(int) - (predicted == labels).astype(int)
    low, high = bootstrap_interval(per_image, seed=seed)
    return {"n": len(labels), "corrected": int((per_image > 0).sum()), "broken": int((per_image < 0).sum()),
            "net_change": float(per_image.mean()) if len(per_image) else 0.0, "ci95": [low, high]}


def score(run: SplitRun, corrected: np.ndarray, blanket: np.ndarray, seed: int) -> dict:
    """Accuracy before and after the policy, the net change and its 95% interval; accuracy with every image
    erased, and from it the break-even error share: the share of errors among the images a gate selects above
    which erasing them gains (corrected rate c among errors, broken rate b among correct answers: e c > (1 - e) b,
    so e > b / (b + c); null when erasure neither corrects nor breaks)."""
    predicted, labels = run.predicted, run.labels
    before = predicted == labels
    fixed = float((blanket[~before] == labels[~before]).mean()) if (~before).any() else 0.0
    broken = float((blanket[before] != labels[before]).mean()) if before.any() else 0.0
    return {"split": run.split, **net_gain(predicted, labels, corrected, seed),
            "accuracy_before": float(before.mean()), "accuracy_after": float((corrected == labels).mean()),
            "changed": int((corrected != predicted).sum()), "accuracy_blanket": float((blanket == labels).mean()),
            "blanket_corrected_rate": fixed, "blanket_broken_rate": broken,
            "break_even_error_share": broken / (broken + fixed) if broken + fixed > 0 else None}


def evaluate_policy(fit: dict, run: SplitRun, seed: int = 0) -> dict:
    """The policy's score on a (test) run it was not fitted on."""
    return score(run, *policy_labels(fit, run, np.arange(len(run.labels))), seed)


def fold_rows(n: int, folds: int, seed: int | list[int]) -> list[np.ndarray]:
    """`folds` disjoint sets of row numbers, sorted, that together hold 0..n-1 (a seeded random partition)."""
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, folds)]


def rule_list(rules: Rules, classes: tuple[str, ...]) -> list[dict]:
    """Rules as policy.json lists them."""
    return [{"pred": classes[c], "max_confidence": threshold} for c, (threshold, _) in sorted(rules.items())]


def policy_document(model: str, fit: dict, test: dict, classes: tuple[str, ...], saliency_method: str,
                    fill: list[float], fitted_on: dict, selection: dict, created: str, versions: dict) -> dict:
    """The `policy.json` content (layout in docs/analysis.md): `fit` is what the service applies, `selection`
    how it was chosen and what it is expected to gain."""
    top_percent, box = fit["setting"]
    return {
        "version": FORMAT_VERSION,
        "model": model,
        **asdict(ErasureSettings(top_percent=top_percent, box=box, fill=fill, saliency_method=saliency_method)),
        "rules": rule_list(fit["rules"], classes),
        "fitted_on": {**fitted_on, "n": fit["n"], "net_gain": fit["gain"],
                      "rule_gains": {classes[c]: gain for c, (_, gain) in sorted(fit["rules"].items())}},
        "selection": selection,
        "test": test,
        "created": created,
        "versions": versions,
    }
