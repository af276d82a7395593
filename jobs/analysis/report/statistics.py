"""The report's statistical parts: the model-dependence rule and its power, erasure by cause and the power of
the erasure verification."""

from __future__ import annotations

from miscause.jobs.analysis.erasure.verification_power import POWER as VERIFICATION_POWER
from miscause.jobs.analysis.patterns import causes
from miscause.jobs.analysis.patterns.dependence_power import POWER, SIMULATIONS, STEP
from miscause.jobs.analysis.patterns.dependence_tests import BOOTSTRAP_RESAMPLES
from miscause.jobs.analysis.patterns.misclassification import Analysis, PairRecord
from miscause.jobs.analysis.patterns.model_dependence import MODEL_DEPENDENT, SHARED, UNDETERMINED
from miscause.jobs.analysis.pipeline import ErasureResults
from miscause.jobs.analysis.report.document import Block


def percent(x: float) -> str:
    """A share as a percentage with one decimal."""
    return f"{100 * x:.1f}%"


def dependence_settings(analysis: Analysis) -> dict:
    """The dependence and equivalence tests' set-up and outcome counts for metrics.json."""
    d = analysis.dependence
    return {"tested": d.tested, "reason": d.reason, "quantity": "share_of_class_errors",
            "test": "quasi_binomial_f", "dispersion": "pearson_over_seed_replicates_floor_1",
            "equivalence": "tost_agresti_caffo_intersection_union", "family": "min_count_in_some_model",
            "family_size": d.family_size, "architectures": d.architectures,
            "replicated_architectures": [a for a, models in d.architectures.items() if len(models) > 1],
            "edge_in_architecture": "majority_of_seeds", "outcomes": d.outcomes, "power": POWER,
            "power_level": d.level, "power_simulations": SIMULATIONS, "power_step": STEP,
            "detectable_range": d.detectable_range, "bootstrap_resamples": BOOTSTRAP_RESAMPLES, "seed": d.seed}


def dependence_text(analysis: Analysis) -> list[str]:
    """The dependence and equivalence tests, their family, levels and power, in words and numbers."""
    o, d = analysis.options, analysis.dependence
    correction = correction_text(o.correction)
    groups = "; ".join(f"{name}: {', '.join(models)}" for name, models in d.architectures.items())
    quantity = (
        "Where a class's errors go: per model and ordered pair i -> j the share of class i's errors predicted as j, "
        "P(j | i, error) = count(i -> j) / errors of i, with each model's own errors, so an architecture that errs "
        "more in the same pattern is not called dependent.")
    family = (f"The tested family, fixed before any test: the {d.family_size} ordered pairs with at least "
              f"{o.min_count} errors in some model; {correction} correction over it, level {o.alpha}.")
    if not d.tested:
        return [quantity, family,
                f"Model dependence and equivalence were not tested: {d.reason}. The comparison is not calibrated by "
                "seed replicates, so no pair is called model-dependent or shared, and every pair with an edge is "
                f"`{causes.UNDETERMINED}`. Give at least two replicate groups (`--replicates NAME=M1,M2,...`) to "
                "test them."]
    counts = d.outcomes
    span = d.detectable_range
    power = (f"from {100 * span[0]:.0f} to {100 * span[1]:.0f} points over the pairs where some difference is "
             "detectable" if span else "no difference is detectable for any pair")
    return [
        quantity, family,
        f"Architectures ({groups}). Model dependence: a quasi-binomial GLM of the share with the architecture as "
        "factor, the models weighted by their errors of the class; F = between-architecture deviance / "
        "(architectures - 1) / dispersion, the dispersion the Pearson chi-square over the seed-to-seed spread "
        "within architectures (models - architectures degrees of freedom), floored at 1 so that seeds that agree "
        "exactly cannot give p = 0.",
        f"Shared: two one-sided tests (Agresti-Caffo) that every two architectures' pooled shares differ by less "
        f"than the margin {o.margin}, their counts divided by the dispersion; the largest p-value over the "
        "architecture pairs (intersection-union), corrected over the family.",
        f"Outcomes of the {d.family_size} pairs: {counts[MODEL_DEPENDENT]} model-dependent, {counts[SHARED]} shared "
        f"(equivalent within {o.margin}, whether or not the F test rejects), {counts[UNDETERMINED]} undetermined "
        "(neither shown).",
        f"Power of the whole rule, by {SIMULATIONS} seeded simulations per pair with its observed errors and "
        f"dispersion: the smallest difference in the share (grid {STEP}) that it calls model-dependent with "
        f"{POWER:.0%} probability at the level {d.level:.3g} (alpha over the family, what the correction asks of the "
        f"smallest p-value), one architecture shifted: {power}. Effect: the difference between the architectures "
        "with the highest and lowest pooled share, with its 95% interval (Agresti-Caffo on the counts divided by the "
        "dispersion, seed-to-seed variation included; metrics.json also holds the percentile bootstrap over the "
        f"class's images, {BOOTSTRAP_RESAMPLES} resamples paired across models, seeds fixed).",
    ]


def correction_text(method: str) -> str:
    """The correction in words."""
    return {"holm": "Holm (family-wise error)", "bh": "Benjamini-Hochberg (false discovery rate)",
            "none": "no"}[method]


def effect_text(record: PairRecord) -> str:
    """A pair's largest difference between architectures with its interval (seeds included where tested, else over
    images with the seeds fixed)."""
    effect = record.dependence.effect
    if effect is None:
        return "-"
    interval = effect.ci95 or effect.ci95_images
    scope = "" if effect.ci95 or interval is None else " images only"
    shown = f" [{100 * interval[0]:+.1f}, {100 * interval[1]:+.1f}{scope}]" if interval else ""
    return f"{effect.high} - {effect.low}: {100 * effect.difference:+.1f} pts{shown}"


def detectable(record: PairRecord) -> str:
    """A pair's smallest difference the rule calls model-dependent with 80% power, and how often it calls an
    equal pair shared."""
    d = record.dependence
    if d.shared_power is None:
        return "-"
    smallest = "none" if d.min_detectable is None else f"{100 * d.min_detectable:.0f} pts"
    return f"{smallest}; equal called shared {percent(d.shared_power)}"


def _rate(rate: float | None) -> str:
    return "-" if rate is None else percent(rate)


def interaction_blocks(analysis: Analysis, erasure: ErasureResults) -> list[Block]:
    """The erasure-by-cause section with the power of the erasure verification."""
    o = analysis.options
    results = erasure.cause_interaction
    rows, pair_rows = [], []
    for name, result in results.items():
        ne, mo = result.causes[causes.NON_ESSENTIAL], result.causes[causes.MORPHOLOGICAL]
        rows.append([name, ne.pairs, f"{ne.corrected} / {ne.errors}", _rate(ne.rate), _rate(ne.random_rate),
                     mo.pairs, f"{mo.corrected} / {mo.errors}", _rate(mo.rate), _rate(mo.random_rate),
                     f"{result.test.p_adjusted:.3g}"])
        pair_rows += [[name, p.true, p.pred, f"{p.corrected} / {p.errors}", percent(p.rate), f"{p.p_adjusted:.3g}"]
                      for p in result.pairs]
    blocks: list[Block] = [
        ("h2", "Erasure by cause"),
        ("p", "Whether erasure corrects the errors of model-dependent (non-essential interference) pairs more often "
              "than those of shared (morphological) pairs, at the default setting. Pairs are grouped by their "
              "pattern cause, before the erasure check (which keeps a pair by these very counts); a non-essential "
              "pair counts for the models where it is significant. Exact one-sided Fisher test per model, "
              f"{correction_text(o.correction)} correction over the models, level {o.alpha}; per non-essential pair "
              f"with at least {o.min_count} errors the same test against the model's morphological errors, "
              "corrected over the model's pairs."),
        ("table", ["model", "non-essential pairs", "corrected / errors", "rate", "random rate", "morphological pairs",
                   "corrected / errors", "rate", "random rate", "Fisher adj. p"], rows),
    ]
    if pair_rows:
        blocks.append(("table", ["model", "true", "pred", "corrected / errors", "rate", "Fisher adj. p"], pair_rows))
    power = erasure.verification_power
    power_rows = [[name, r.true, r.pred, r.errors, f"{r.level:.3g}", r.needed,
                   "impossible" if r.min_detectable_rate is None else percent(r.min_detectable_rate)]
                  for name, rows in power.items() for r in rows]
    if power_rows:
        blocks += [
            ("h3", "Power of the erasure verification"),
            ("p", "Per tested pair: the level of its sign-flip test after correction over the model's tested "
                  "pairs, the fewest errors saliency erasure alone must correct (with none corrected by any of the "
                  "control's draws; the p-value is then 2^-n, as McNemar's) for significance, and the smallest "
                  "share of its errors saliency erasure alone must correct to be verified with "
                  f"{VERIFICATION_POWER:.0%} power under that most favourable outcome; \"impossible\": the pair has "
                  "too few errors to be verified whatever erasure does."),
            ("table", ["model", "true", "pred", "errors", "level", "errors needed at best", "smallest detectable rate"],
             power_rows),
        ]
    return blocks
