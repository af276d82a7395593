"""metrics.json: every number of the run, rendered from `pipeline.Results` (the layout is in docs/analysis.md)."""

from __future__ import annotations

import math
from dataclasses import asdict, fields, is_dataclass

import numpy as np

from miscause.jobs.analysis.erasure.curves import CurveSummary
from miscause.jobs.analysis.erasure.fills import fill_name
from miscause.jobs.analysis.erasure.summaries import Compared, ErasureSummary, PairSummary, Setting
from miscause.jobs.analysis.patterns.misclassification import PairRecord
from miscause.jobs.analysis.patterns.networks import network_json
from miscause.jobs.analysis.pipeline import ErasureResults, Results
from miscause.jobs.analysis.report.statistics import dependence_settings

METRICS_VERSION = 3


def plain(value: object) -> object:
    """JSON-ready copy: typed results to objects of their fields, numpy values to Python, tuples to lists, NaN and
    Inf to null."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def pair_json(record: PairRecord) -> dict:
    """A pair's entry: the record's fields, `erasure_verified_models` only when the erasure study ran."""
    entry = asdict(record)
    if record.erasure_verified_models is None:
        del entry["erasure_verified_models"]
    return entry


PAIR_OUTCOMES = ("corrected", "third_class", "unchanged", "corrected_rate")  # what a pair's entry keeps per anchor


def paired_test_key(control: str) -> str:
    """Where the paired test of saliency against `control` is kept: `test` for random anchors, else `test_NAME`."""
    return "test" if control == "random" else f"test_{control}"


def compared_json(compared: Compared, keep: tuple[str, ...] | None = None,
                  extra: dict[str, dict] | None = None) -> dict:
    """Each anchor kind's outcomes under its name (only the keys `keep`, with `extra`'s keys per anchor) and each
    paired test under `paired_test_key` (the control's count named `random_only` whichever control it is)."""
    out: dict = {}
    for anchor, outcomes in compared.outcomes.items():
        entry = asdict(outcomes)
        out[anchor] = {**{k: entry[k] for k in keep or entry}, **(extra or {}).get(anchor, {})}
    for control, test in compared.tests.items():
        out[paired_test_key(control)] = {"saliency_only": test.saliency_only, "random_only": test.control_only,
                                  "p_value": test.p_value}
    return out


def setting_json(setting: Setting) -> dict:
    """One setting's entry: (p, b), the anchor kinds' outcomes with their mean erased pixels, the paired tests and
    the runner-up counts."""
    pixels = {anchor: {"mean_erased_pixels": value} for anchor, value in setting.erased_pixels.items()}
    return {"top_percent": setting.top_percent, "box": setting.box, **compared_json(setting.compared, extra=pixels),
            "runner_up": setting.runner_up}


def erasure_pair_json(pair: PairSummary) -> dict:
    """One class pair's entry of the erasure summary: its errors' outcomes per anchor kind, tests and verification."""
    return {"true": pair.true, "pred": pair.pred, "errors": pair.errors,
            **compared_json(pair.compared, keep=PAIR_OUTCOMES), "runner_up_true": pair.runner_up_true,
            "saliency_to_runner_up": pair.saliency_to_runner_up, "candidate": pair.candidate,
            "verification": pair.verification, "p_adjusted": pair.p_adjusted, "verified": pair.verified}


def erasure_json(summary: ErasureSummary, curves: CurveSummary | None) -> dict:
    """One model's `erasure` entry (the layout in docs/analysis.md)."""
    fills = summary.fills
    return {"split": summary.split, "n": summary.n, "errors": summary.errors,
            "default": {"top_percent": summary.default[0], "box": summary.default[1]}, "control": summary.control,
            "runner_up_oracle": summary.runner_up_oracle,
            "settings": [setting_json(s) for s in summary.settings],
            "fills": None if fills is None else {
                "top_percent": fills.top_percent, "box": fills.box,
                "fills": [{"fill": f.fill, **compared_json(f.compared)} for f in fills.fills]},
            "pairs": [erasure_pair_json(p) for p in summary.pairs], "curves": curves}


def erasure_settings(erasure: ErasureResults) -> dict:
    """The study's settings as metrics.json states them: every erasure option, the fill by its name, the split and
    the control pairs are verified against."""
    options = erasure.study.erasure
    return {**asdict(options), "split": erasure.split, "fill": fill_name(options.fill),
            "control": erasure.study.control}


def metrics(results: Results) -> dict:
    """Every number of the run (the metrics.json layout)."""
    analysis, erasure, context = results.analysis, results.erasure, results.context
    names = list(analysis.models)
    options = analysis.options
    return plain({
        "format_version": METRICS_VERSION,
        "created": context.created,
        "command": context.command,
        "data": results.data,
        "versions": context.versions,
        "settings": {"alpha": options.alpha, "correction": options.correction, "min_count": options.min_count,
                     "tolerance": options.tolerance, "quorum": analysis.quorum, "margin": options.margin,
                     "replicates": options.groups, "model_dependence": dependence_settings(analysis),
                     "erasure": erasure_settings(erasure) if erasure else None},
        "classes": list(analysis.classes),
        "models": {name: {"accuracy": m.accuracy, "errors": m.errors, "n": m.n,
                          "source": analysis.sources.get(name, ""),
                          "significant_edges": int(m.significant.sum()), "confusion": m.counts,
                          "conditional": m.conditional} for name, m in analysis.models.items()},
        "similarity": {"models": names, "spearman": analysis.spearman, "jaccard": analysis.jaccard},
        "consensus": network_json(analysis.consensus),
        "pairs": [pair_json(record) for record in analysis.pairs],
        "endpoints": {name: asdict(e) for name, e in erasure.endpoints.items()} if erasure else None,
        "erasure": {name: erasure_json(s, erasure.curves.get(name)) for name, s in erasure.summaries.items()}
        if erasure else None,
        "cause_interaction": erasure.cause_interaction if erasure else None,
        "verification_power": erasure.verification_power if erasure else None,
        "policies": erasure.policies if erasure else None,
        "randomisation": results.randomisation,
        "warnings": results.warnings,
    })


