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

from dataclasses import dataclass

from miscause.jobs.analysis.erasure.summaries import ErasureSummary
from miscause.jobs.analysis.patterns.significance import mcnemar_min_detectable

POWER = 0.8


@dataclass(frozen=True, kw_only=True)
class PairPower:
    """One tested pair: its errors, the per-pair level, the errors needed at best and the smallest detectable
    correction rate (None: impossible with its errors)."""

    true: str
    pred: str
    errors: int
    level: float
    needed: int
    min_detectable_rate: float | None


def verification_power(summaries: dict[str, ErasureSummary], alpha: float,
                       correction: str) -> dict[str, list[PairPower]]:
    """Per model, per tested pair: errors, level, errors needed at best, smallest detectable correction rate."""
    out = {}
    for name, summary in summaries.items():
        tested = [p for p in summary.pairs if p.candidate]
        level = alpha if correction == "none" or not tested else alpha / len(tested)
        out[name] = [PairPower(true=pair.true, pred=pair.pred, errors=pair.errors, level=level, needed=needed,
                               min_detectable_rate=rate)
                     for pair in tested for needed, rate in (mcnemar_min_detectable(pair.errors, level, POWER),)]
    return out
