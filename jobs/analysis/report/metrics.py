"""metrics.json: every number of the run, rendered from `pipeline.Results` (the layout is in docs/analysis.md)."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np

from miscause.jobs.analysis.patterns.misclassification import PairRecord
from miscause.jobs.analysis.patterns.networks import network_json
from miscause.jobs.analysis.pipeline import Results
from miscause.jobs.analysis.report.statistics import dependence_settings

METRICS_VERSION = 1


def plain(value: object) -> object:
    """JSON-ready copy: numpy values to Python, tuples to lists, NaN and Inf to null."""
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
                     "erasure": erasure.settings if erasure else None},
        "classes": list(analysis.classes),
        "models": {name: {"accuracy": m.accuracy, "errors": m.errors, "n": m.n,
                          "source": analysis.sources.get(name, ""),
                          "significant_edges": int(m.significant.sum()), "confusion": m.counts,
                          "conditional": m.conditional} for name, m in analysis.models.items()},
        "similarity": {"models": names, "spearman": analysis.spearman, "jaccard": analysis.jaccard},
        "consensus": network_json(analysis.consensus),
        "pairs": [pair_json(record) for record in analysis.pairs],
        "erasure": erasure.summaries if erasure else None,
        "cause_interaction": erasure.cause_interaction if erasure else None,
        "verification_power": erasure.verification_power if erasure else None,
        "policies": erasure.policies if erasure else None,
        "randomisation": results.randomisation,
        "warnings": results.warnings,
    })


