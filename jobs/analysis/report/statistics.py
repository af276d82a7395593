"""The report's statistical parts: the model-dependence rule and its power, erasure by cause and the power of
the erasure verification, how the policy was fitted."""

from __future__ import annotations

from miscause.jobs.analysis.erasure.verification_power import POWER as VERIFICATION_POWER
from miscause.jobs.analysis.patterns import causes
from miscause.jobs.analysis.patterns.misclassification import Analysis
from miscause.jobs.analysis.patterns.model_dependence import POWER
from miscause.jobs.analysis.pipeline import ErasureResults
from miscause.jobs.analysis.report.document import Block


def percent(x: float) -> str:
    """A share as a percentage with one decimal."""
    return f"{100 * x:.1f}%"


def dependence_settings(analysis: Analysis) -> dict | None:
    """The model-dependence test's settings for metrics.json (None with one model)."""
    d = analysis.dependence
    if d is None or len(analysis.models) < 2:
        return None
    return {"statistic": "cochran_q", "calibration": "anova_f_seed_replicates" if d.calibrated else None,
            "df_between": d.df_between if d.calibrated else None, "df_within": d.df_within if d.calibrated else None,
            "power": POWER, "power_level": d.mdd_level}


def dependence_text(analysis: Analysis) -> list[str]:
    """The model-dependence test and its levels, in words."""
    o, d = analysis.options, analysis.dependence
    if d is None or len(analysis.models) < 2:
        return []
    groups = "; ".join(f"{name}: {', '.join(models)}" for name, models in o.groups.items())
    calibration = (
        f"Calibrated by seed replicates ({groups}): the one-way analysis of variance of the models' rates "
        "P(pred = j | true = i) with the architecture as factor (models outside every group are architectures of "
        "their own); its error term pools the seed-to-seed spread within the replicate groups "
        f"({d.df_within} degrees of freedom; architectures {d.df_between + 1}), so F asks whether architectures "
        f"differ by more than seeds do. Its p-values get the same correction; a pair is model-dependent only when "
        f"both adjusted p-values are at most {o.alpha} (an intersection-union test, level {o.alpha})."
        if d.calibrated else
        "No replicate groups were given (`--replicates NAME=M1,M2,...`), so the test is not calibrated against "
        "seed-to-seed variation: a pair found model-dependent may differ between training runs of one "
        "architecture as much as between architectures.")
    return [
        "Model dependence of a pair i -> j: Cochran's Q (Cochran 1950) over all models' per-image indicators "
        "\"image of class i predicted as j\" on the same images (chi-square, M - 1 degrees of freedom; paired, so "
        f"only disagreements between models on an image count), {correction_text(o.correction)} correction over the "
        f"K(K-1) ordered pairs, level {o.alpha}, and some model holding at least {o.min_count} such errors.",
        calibration,
        f"Power: for each pair the report gives the smallest difference in P(pred = j | true = i) between two "
        f"models that the test detects with {POWER:.0%} power at the per-pair level {d.mdd_level:.3g} (alpha over "
        "the number of pairs, what the correction asks of the smallest p-value), from the two-proportion normal "
        "approximation on the class's images and the models' mean rate (Fleiss, Levin & Paik 2003); pairing "
        "only lowers it. It is also given in images and as a share of the class's errors.",
    ]


def correction_text(method: str) -> str:
    """The correction in words."""
    return {"holm": "Holm (family-wise error)", "bh": "Benjamini-Hochberg (false discovery rate)",
            "none": "no"}[method]


def detectable(record: dict) -> str:
    """A pair's smallest detectable difference: points, images, share of the class's errors."""
    mdd = record["dependence"]["min_detectable"]
    if mdd["rate"] is None:
        return "none"
    share = f"; {percent(mdd['conditional'])} of errors" if mdd["conditional"] is not None else ""
    return f"{100 * mdd['rate']:.1f} pts ({mdd['images']:.0f} images{share})"


def _rate(tally: dict, key: str) -> str:
    return "-" if tally[key] is None else percent(tally[key])


def interaction_blocks(analysis: Analysis, erasure: ErasureResults) -> list[Block]:
    """The erasure-by-cause section with the power of the erasure verification."""
    o = analysis.options
    results = erasure.cause_interaction
    rows, pair_rows = [], []
    for name, result in results.items():
        ne, mo = result["causes"][causes.NON_ESSENTIAL], result["causes"][causes.MORPHOLOGICAL]
        rows.append([name, ne["pairs"], f"{ne['corrected']} / {ne['errors']}", _rate(ne, "rate"),
                     _rate(ne, "random_rate"), mo["pairs"], f"{mo['corrected']} / {mo['errors']}", _rate(mo, "rate"),
                     _rate(mo, "random_rate"), f"{result['test']['p_adjusted']:.3g}"])
        pair_rows += [[name, p["true"], p["pred"], f"{p['corrected']} / {p['errors']}", percent(p["rate"]),
                       f"{p['p_adjusted']:.3g}"] for p in result["pairs"]]
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
    power_rows = [[name, r["true"], r["pred"], r["errors"], f"{r['level']:.3g}", r["needed"],
                   "impossible" if r["min_detectable_rate"] is None else percent(r["min_detectable_rate"])]
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


def fitted_text(policy: dict) -> str:
    """How and on what a policy was fitted, in words."""
    fitted = policy["fitted_on"]
    if fitted.get("method") == "cross-fit":
        return (f"fitted by {fitted['folds']}-fold cross-fitting on the test split ({fitted['reason']}): each fold "
                "scored by the policy fitted on the other folds; the policy written is fitted on the whole split, "
                f"net gain {fitted['net_gain']} of {fitted['n']} images in-sample")
    return f"fitted on the validation split: net gain {fitted['net_gain']} of {fitted['n']} images"
