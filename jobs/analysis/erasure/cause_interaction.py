"""How often erasure corrects the errors of each cause: whether the two causes respond to it differently.

Per model, from the erasure study's per-pair outcomes at the default setting: the errors of pairs whose pattern
cause is `non_essential_interference` for this model (the pair is significant in it) and of
`morphological_similarity` pairs, and the share of each that saliency-anchored erasure corrects (random anchors
beside it). The pattern cause is the one before the erasure check: that check keeps a pair by its correction
counts, so grouping by it would make the comparison circular.
- per model: the exact one-sided Fisher test (Fisher 1935) that non-essential errors are corrected more often
  than morphological ones; p-values corrected over the models with the analysis's correction;
- per non-essential pair with at least `min_count` errors: the same test of that pair against the model's
  morphological errors, corrected over the model's tested pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from miscause.jobs.analysis.erasure.summaries import ErasureSummary, PairSummary
from miscause.jobs.analysis.patterns.causes import MORPHOLOGICAL, NON_ESSENTIAL
from miscause.jobs.analysis.patterns.misclassification import Analysis
from miscause.jobs.analysis.patterns.significance import adjust, fisher_greater


@dataclass(frozen=True, kw_only=True)
class Tally:
    """The errors of some pairs and how many saliency and random erasure correct (rates None without errors)."""

    pairs: int
    errors: int
    corrected: int
    rate: float | None
    random_corrected: int
    random_rate: float | None


@dataclass(frozen=True, kw_only=True)
class PairInteraction:
    """One non-essential pair's errors against the model's morphological errors: corrected by saliency erasure,
    the Fisher test's p-value, adjusted over the model's tested pairs, and whether it is significant."""

    true: str
    pred: str
    errors: int
    corrected: int
    rate: float
    p_value: float
    p_adjusted: float
    significant: bool


@dataclass(frozen=True, kw_only=True)
class InteractionTest:
    """The per-model Fisher test, its p-value adjusted over the models, and whether it is significant."""

    p_value: float
    p_adjusted: float | None = None
    significant: bool | None = None


@dataclass(frozen=True, kw_only=True)
class CauseInteraction:
    """One model's errors and correction rates per cause, its per-pair tests and its per-model test."""

    causes: dict[str, Tally]
    pairs: tuple[PairInteraction, ...]
    test: InteractionTest


def tally(pairs: list[PairSummary]) -> Tally:
    """Errors of some pairs and how many saliency and random erasure correct."""
    errors = sum(p.errors for p in pairs)
    corrected = sum(p.compared.outcomes["saliency"].corrected for p in pairs)
    random = sum(p.compared.outcomes["random"].corrected for p in pairs)
    return Tally(pairs=len(pairs), errors=errors, corrected=corrected, rate=corrected / errors if errors else None,
                 random_corrected=random, random_rate=random / errors if errors else None)


def cause_interaction(analysis: Analysis, summaries: dict[str, ErasureSummary]) -> dict[str, CauseInteraction]:
    """Per model: errors and correction rates per cause, the per-model test and the per-pair tests."""
    options = analysis.options
    records = {(r.true, r.pred): r for r in analysis.pairs}
    out = {}
    for name, summary in summaries.items():
        groups: dict[str, list[PairSummary]] = {NON_ESSENTIAL: [], MORPHOLOGICAL: []}
        for pair in summary.pairs:
            record = records[pair.true, pair.pred]
            cause = record.pattern_cause
            if cause == MORPHOLOGICAL or (cause == NON_ESSENTIAL and name in record.models):
                groups[cause].append(pair)
        causes = {cause: tally(pairs) for cause, pairs in groups.items()}
        shared = (causes[MORPHOLOGICAL].corrected, causes[MORPHOLOGICAL].errors)
        tested = [p for p in groups[NON_ESSENTIAL] if p.errors >= options.min_count]
        p_values = [fisher_greater((p.compared.outcomes["saliency"].corrected, p.errors), shared) for p in tested]
        pairs = tuple(PairInteraction(true=p.true, pred=p.pred, errors=p.errors,
                                      corrected=p.compared.outcomes["saliency"].corrected,
                                      rate=p.compared.outcomes["saliency"].corrected / p.errors, p_value=value,
                                      p_adjusted=float(adjusted), significant=bool(adjusted <= options.alpha))
                      for p, value, adjusted in zip(tested, p_values, adjust(p_values, options.correction),
                                                    strict=True))
        out[name] = CauseInteraction(causes=causes, pairs=pairs, test=InteractionTest(
            p_value=fisher_greater((causes[NON_ESSENTIAL].corrected, causes[NON_ESSENTIAL].errors), shared)))
    adjusted = adjust([r.test.p_value for r in out.values()], options.correction)
    return {name: replace(result, test=replace(result.test, p_adjusted=float(p), significant=bool(p <= options.alpha)))
            for (name, result), p in zip(out.items(), adjusted, strict=True)}
