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

from miscause.jobs.analysis.patterns.causes import MORPHOLOGICAL, NON_ESSENTIAL
from miscause.jobs.analysis.patterns.misclassification import Analysis
from miscause.jobs.analysis.patterns.significance import adjust, fisher_greater


def tally(pairs: list[dict]) -> dict:
    """Errors of some pairs and how many saliency and random erasure correct."""
    errors = sum(p["errors"] for p in pairs)
    corrected = sum(p["saliency"]["corrected"] for p in pairs)
    random = sum(p["random"]["corrected"] for p in pairs)
    return {"pairs": len(pairs), "errors": errors, "corrected": corrected,
            "rate": corrected / errors if errors else None, "random_corrected": random,
            "random_rate": random / errors if errors else None}


def cause_interaction(analysis: Analysis, summaries: dict[str, dict]) -> dict[str, dict]:
    """Per model: errors and correction rates per cause, the per-model test and the per-pair tests."""
    options = analysis.options
    records = {(r.true, r.pred): r for r in analysis.pairs}
    out = {}
    for name, summary in summaries.items():
        groups: dict[str, list[dict]] = {NON_ESSENTIAL: [], MORPHOLOGICAL: []}
        for pair in summary["pairs"]:
            record = records[pair["true"], pair["pred"]]
            cause = record.pattern_cause
            if cause == MORPHOLOGICAL or (cause == NON_ESSENTIAL and name in record.models):
                groups[cause].append(pair)
        causes = {cause: tally(pairs) for cause, pairs in groups.items()}
        shared = (causes[MORPHOLOGICAL]["corrected"], causes[MORPHOLOGICAL]["errors"])
        tested = [p for p in groups[NON_ESSENTIAL] if p["errors"] >= options.min_count]
        p_values = [fisher_greater((p["saliency"]["corrected"], p["errors"]), shared) for p in tested]
        pairs = [{"true": p["true"], "pred": p["pred"], "errors": p["errors"], "corrected": p["saliency"]["corrected"],
                  "rate": p["saliency"]["corrected"] / p["errors"], "p_value": value, "p_adjusted": float(adjusted),
                  "significant": bool(adjusted <= options.alpha)}
                 for p, value, adjusted in zip(tested, p_values, adjust(p_values, options.correction), strict=True)]
        out[name] = {"causes": causes, "pairs": pairs,
                     "test": {"p_value": fisher_greater((causes[NON_ESSENTIAL]["corrected"],
                                                         causes[NON_ESSENTIAL]["errors"]), shared)}}
    for result, adjusted in zip(out.values(), adjust([r["test"]["p_value"] for r in out.values()],
                                                     options.correction), strict=True):
        result["test"].update(p_adjusted=float(adjusted), significant=bool(adjusted <= options.alpha))
    return out
