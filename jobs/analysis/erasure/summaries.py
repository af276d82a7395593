"""What the erasure did, counted: per setting, per fill and per class pair, every anchor kind's outcomes on the
errors (corrected, third class, unchanged) and on the correct answers (broken), the paired tests of saliency
against each control (exact one-sided McNemar on the same images) and the runner-up counts; a pair is verified
where saliency erasure beats the control after correction over the model's significant edges."""

from __future__ import annotations

import numpy as np

from miscause.errors import MiscauseError
from miscause.jobs.analysis.erasure import runner_up
from miscause.jobs.analysis.erasure.run import SplitRun
from miscause.jobs.analysis.patterns.significance import adjust, mcnemar_greater


def outcomes(labels: np.ndarray, before: np.ndarray, after: np.ndarray) -> dict:
    """Counts of what an erasure did: to the errors (corrected, third class, unchanged) and to the correct."""
    wrong = before != labels
    n_errors, n_correct = int(wrong.sum()), int((~wrong).sum())
    corrected = int((wrong & (after == labels)).sum())
    unchanged = int((wrong & (after == before)).sum())
    broken = int((~wrong & (after != labels)).sum())
    return {"errors": n_errors, "corrected": corrected, "third_class": n_errors - corrected - unchanged,
            "unchanged": unchanged, "corrected_rate": corrected / n_errors if n_errors else 0.0,
            "correct": n_correct, "broken": broken, "broken_rate": broken / n_correct if n_correct else 0.0}


def paired_test(labels: np.ndarray, saliency_after: np.ndarray, random_after: np.ndarray) -> dict:
    """McNemar on the same images: corrected by saliency erasure only vs by the control's erasure only (the keys
    say `random_only` whichever control it is)."""
    saliency_fixed, random_fixed = saliency_after == labels, random_after == labels
    only_saliency = int((saliency_fixed & ~random_fixed).sum())
    only_random = int((random_fixed & ~saliency_fixed).sum())
    return {"saliency_only": only_saliency, "random_only": only_random,
            "p_value": mcnemar_greater(only_saliency, only_random)}


def test_key(control: str) -> str:
    """Where the paired test of saliency against `control` is kept: `test` for random anchors, else `test_NAME`."""
    return "test" if control == "random" else f"test_{control}"


def compared(labels: np.ndarray, before: np.ndarray, afters: dict[str, np.ndarray]) -> dict:
    """Each anchor kind's outcomes, and the paired test of saliency against every control on the errors."""
    wrong = before != labels
    result = {anchor: outcomes(labels, before, after) for anchor, after in afters.items()}
    for control in (a for a in afters if a != "saliency"):
        result[test_key(control)] = paired_test(labels[wrong], afters["saliency"][wrong], afters[control][wrong])
    return result


def setting_summary(run: SplitRun, index: int) -> dict:
    """One setting over the whole split: every anchor kind's outcomes and mean erased pixels per image, the
    paired tests on the errors, and each erasure against the runner-up."""
    top_percent, box = run.settings[index]
    predicted, second = run.predicted, run.runner_up
    afters = {anchor: run.after(anchor)[index] for anchor in run.anchors}
    summary = {"top_percent": top_percent, "box": box, **compared(run.labels, predicted, afters)}
    for anchor in run.anchors:
        summary[anchor]["mean_erased_pixels"] = float(run.erased_pixels(anchor)[index].mean())
    summary["runner_up"] = {anchor: runner_up.runner_up_outcomes(run.labels, predicted, second, after)
                            for anchor, after in afters.items()}
    return summary


def fill_summary(run: SplitRun) -> dict | None:
    """The fill sweep at its setting: per fill every anchor kind's outcomes and the paired tests; None without."""
    if not run.fill_predicted:
        return None
    top_percent, box = run.fill_setting
    return {"top_percent": top_percent, "box": box,
            "fills": [{"fill": name, **compared(run.labels, run.predicted, by_anchor)}
                      for name, by_anchor in run.fill_predicted.items()]}


def pair_summaries(run: SplitRun, index: int, candidates: np.ndarray, alpha: float,
                   correction: str, control: str = "random") -> list[dict]:
    """Per class pair with errors: the erasure outcomes, the paired tests and the runner-up counts; the
    candidates (the model's significant edges) are corrected for multiple testing among themselves and marked
    `verified` or not by the test against `control`."""
    predicted, labels, second = run.predicted, run.labels, run.runner_up
    records = []
    for i, j in sorted(set(zip(labels[predicted != labels].tolist(), predicted[predicted != labels].tolist(),
                               strict=True))):
        members = (labels == i) & (predicted == j)
        afters = {anchor: run.after(anchor)[index][members] for anchor in run.anchors}
        record = {"true": run.classes[i], "pred": run.classes[j], "errors": int(members.sum()),
                  **compared(labels[members], predicted[members], afters),
                  "runner_up_true": int((second[members] == i).sum()),
                  "saliency_to_runner_up": int((afters["saliency"] == second[members]).sum()),
                  "candidate": bool(candidates[i, j]), "p_adjusted": None, "verified": None}
        for anchor in run.anchors:
            for key in ("correct", "broken", "broken_rate", "errors"):
                record[anchor].pop(key)
        records.append(record)
    tested = [r for r in records if r["candidate"]]
    for record, p in zip(tested, adjust(np.array([r[test_key(control)]["p_value"] for r in tested]), correction),
                         strict=True):
        record["p_adjusted"] = float(p)
        record["verified"] = bool(p <= alpha)
    return records


def summarize(run: SplitRun, default: tuple[float, int], candidates: np.ndarray, alpha: float,
              correction: str, control: str = "random") -> dict:
    """The study's numbers for one model on one split (the `erasure` entry of metrics.json); pairs are verified
    against `control`, one of the run's control anchor kinds."""
    if control not in run.anchors[1:]:
        raise MiscauseError(f"{run.model}: no {control!r} control in these runs (they hold "
                            f"{', '.join(run.anchors[1:])})")
    index = run.settings.index(default)
    return {"split": run.split, "n": len(run.labels), "errors": int((run.predicted != run.labels).sum()),
            "default": {"top_percent": default[0], "box": default[1]}, "control": control,
            "runner_up_oracle": runner_up.oracle(run.labels, run.predicted, run.runner_up),
            "settings": [setting_summary(run, s) for s in range(len(run.settings))],
            "fills": fill_summary(run),
            "pairs": pair_summaries(run, index, candidates, alpha, correction, control)}


def verified_pairs(summary: dict) -> list[tuple[str, str]]:
    """(true, pred) pairs whose errors saliency erasure corrects significantly more than the control's erasure."""
    return [(r["true"], r["pred"]) for r in summary["pairs"] if r["verified"]]
