"""What the erasure verification could have detected: per tested pair, its errors against the test's level.

The verification (`erasure.summaries.pair_summaries`) is a one-sided sign-flip permutation test of the paired
differences (saliency corrects - the control's draws correct) per significant edge of a model, corrected over the
model's edges. In its most favourable outcome, errors corrected by saliency erasure and by none of the control's
draws, its p-value is 2^-n, the exact McNemar test's; so at the per-pair level alpha / m (m tested edges; alpha
without correction) that outcome needs `needed` such errors; `min_detectable_rate` is the share of the pair's
errors saliency erasure alone must correct for the test to succeed with 80% power, for binary outcomes as with
one control draw (`significance.mcnemar_min_detectable`). A pair with fewer errors than `needed` could not have
been verified whatever erasure did.
"""

from __future__ import annotations

from miscause.jobs.analysis.patterns.significance import mcnemar_min_detectable

POWER = 0.8


def verification_power(summaries: dict[str, dict], alpha: float, correction: str) -> dict[str, list[dict]]:
    """Per model, per tested pair: errors, level, errors needed at best, smallest detectable correction rate."""
    out = {}
    for name, summary in summaries.items():
        tested = [p for p in summary["pairs"] if p["candidate"]]
        level = alpha if correction == "none" or not tested else alpha / len(tested)
        rows = []
        for pair in tested:
            needed, rate = mcnemar_min_detectable(pair["errors"], level, POWER)
            rows.append({"true": pair["true"], "pred": pair["pred"], "errors": pair["errors"], "level": level,
                         "needed": needed, "min_detectable_rate": rate})
        out[name] = rows
    return out
