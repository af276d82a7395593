"""The report's text: its sections in order, as blocks (`document`), rendered from `pipeline.Results`."""

from __future__ import annotations

import numpy as np

from miscause.jobs.analysis.erasure.fills import fill_name
from miscause.jobs.analysis.patterns import causes
from miscause.jobs.analysis.patterns.misclassification import Analysis
from miscause.jobs.analysis.pipeline import ErasureResults, Results
from miscause.jobs.analysis.report import controls as report_controls
from miscause.jobs.analysis.report import endpoints as report_endpoints
from miscause.jobs.analysis.report.deviations import deviations
from miscause.jobs.analysis.report.document import Block
from miscause.jobs.analysis.report.figures import figure_file
from miscause.jobs.analysis.report.policy import policy_blocks
from miscause.jobs.analysis.report.statistics import (
    correction_text,
    dependence_text,
    detectable,
    effect_text,
    interaction_blocks,
)
from miscause.jobs.analysis.report.statistics import percent as _percent


def rule_text(analysis: Analysis) -> list[str]:
    """The significance and cause-assignment rule as applied, in words."""
    o, m = analysis.options, len(analysis.models)
    correction = correction_text(o.correction)
    return [
        "Baseline without structure: a misclassified image of class i lands on each of the other K-1 classes "
        "with equal probability, so count(i -> j) ~ Binomial(errors of i, 1/(K-1)).",
        f"An edge i -> j is significant for a model when its one-sided binomial p-value, with {correction} "
        f"correction over the model's K(K-1) ordered pairs, is at most {o.alpha}, and it holds at least "
        f"{o.min_count} errors. A model's misclassification network keeps exactly these edges.",
        *dependence_text(analysis),
        f"An architecture has an edge when a strict majority of its models (seeds) have it. With {m} model(s) in "
        f"{len(analysis.dependence.architectures)} architecture(s) and tolerance {o.tolerance}, the quorum is "
        f"max(A - tolerance, floor(A/2) + 1) = {analysis.quorum} architectures. A pair shown shared with the edge in "
        f"at least {analysis.quorum} architecture(s) is `{causes.MORPHOLOGICAL}`; a pair shown model-dependent and "
        f"significant in at least one model is `{causes.NON_ESSENTIAL}` for the models where it is significant; any "
        f"other pair with an edge is `{causes.UNDETERMINED}` (an edge in one model and none in another is not a "
        f"difference, and a failure to reject is not sameness); a pair without an edge is "
        f"`{causes.NOT_SIGNIFICANT}`.",
        "When the erasure study ran, a pair is reported as non-essential interference only where erasing at the "
        "most salient pixels corrects its errors significantly more often than the control erasure named in the "
        "erasure study (exact one-sided McNemar test on the same images, corrected over the model's significant "
        f"edges with the same correction, level {o.alpha}); an unverified pair is reported as "
        f"`{causes.UNDETERMINED}` with its pattern cause kept in metrics.json.",
    ]


PAIR_HEADERS = ["true", "predicted", "cause", "models", "architectures with the edge",
                "share of errors by architecture", "outcome", "largest difference [95% CI]", "dependence adj. p",
                "equivalence adj. p", "smallest detectable; equal called shared", "erasure verified in"]


def _pair_rows(analysis: Analysis) -> list[list]:
    rows = []
    for record in analysis.pairs:
        if not record.models:
            continue
        d = record.dependence
        shares = ", ".join(f"{arch} {'-' if share is None else _percent(share)}" for arch, share in d.shares.items())
        cause = f"`{record.cause}`"
        if record.pattern_cause != record.cause:
            cause += f" (pattern: `{record.pattern_cause}`, not verified)"
        rows.append([record.true, record.pred, cause, len(record.models), ", ".join(record.architectures) or "-",
                     shares, d.outcome, effect_text(record), _p(d.p_adjusted), _p(d.equivalence_adjusted),
                     detectable(record), ", ".join(record.erasure_verified_models or []) or "-"])
    return sorted(rows, key=lambda row: (-row[3], row[0], row[1]))


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _erasure_blocks(erasure: ErasureResults) -> list[Block]:
    s = erasure.study.erasure
    blocks: list[Block] = [
        ("h2", "Erasure study"),
        ("p", f"Split `{erasure.split}`. Saliency `{s.saliency_method}` of the predicted class; boxes of "
              f"b x b pixels anchored at the top p% pixels, filled with `{fill_name(s.fill)}`. "
              f"Default p = {s.top_percent}, b = {s.box}; sweep p in {s.sweep_top_percent}, "
              f"b in {s.sweep_box} (where a model ran it). Control (a): as many anchors drawn uniformly at "
              "random (with the erasure seed of the run, or of each result file); control (b): the same erasure "
              "on correctly classified images; the location-matched control: the saliency mask of another "
              "image with the same predicted class (one draw per setting "
              f"here, {s.control_draws} at the primary setting). A pair is verified when saliency erasure "
              f"corrects its errors more than the `{erasure.study.control}` control does (one-sided sign-flip "
              "permutation test of the paired differences, the control's draws averaged per image)."),
    ]
    blocks += report_endpoints.secondary_blocks(erasure.endpoints)
    for name, summary in erasure.summaries.items():
        default = summary.default_setting
        anchors = default.compared.anchors
        blocks += [
            ("h3", f"{name}"),
            ("p", f"{summary.errors} misclassified of {summary.n} images; default setting. "
                  + report_controls.test_text(default)),
            ("table", report_controls.OUTCOME_HEADERS, report_controls.outcome_rows(default)),
            report_controls.sweep_table(summary.settings),
            ("figure", figure_file("erasure", name), f"{name}: erasure sweep, saliency against the controls"),
        ]
        candidates = [r for r in summary.pairs if r.candidate]
        if candidates:
            blocks.append(("table", ["true", "pred", "errors", "runner-up true"]
                           + [f"{a} corrected" for a in anchors]
                           + [f"{summary.control} corrected (mean over draws)", "adjusted p", "verified"],
                           [[r.true, r.pred, r.errors, r.runner_up_true]
                            + [r.compared.outcomes[a].corrected for a in anchors]
                            + [f"{r.verification.control_corrected:.1f}", f"{r.p_adjusted:.3g}",
                               "yes" if r.verified else "no"] for r in candidates]))
        blocks += report_controls.control_blocks(name, summary, erasure.curves.get(name))
        if erasure.examples.get(name):
            blocks.append(("figure", figure_file("examples", name),
                           f"{name}: misclassified test images, saliency of the predicted class, erased image"))
    return blocks


def document(results: Results) -> list[Block]:
    """The report's blocks, in order."""
    analysis, erasure, context = results.analysis, results.erasure, results.context
    names = list(analysis.models)
    counts = {c: sum(r.cause == c for r in analysis.pairs) for c in causes.CAUSES}
    blocks: list[Block] = [
        ("h1", "Misclassification analysis"),
        ("p", f"Created {context.created}. Command:"),
        ("code", context.command),
        *(report_endpoints.primary_blocks(erasure.endpoints) if erasure else []),
        ("h2", "Data and models"),
        ("p", results.data.get("description", "")),
        ("table", ["model", "source", "samples", "accuracy", "errors", "significant edges"],
         [[n, f"`{analysis.sources.get(n, '')}`", m.n, _percent(m.accuracy), m.errors, int(m.significant.sum())]
          for n, m in analysis.models.items()]),
        ("p", "Classes: " + ", ".join(analysis.classes) + "."),
        ("h2", "Rule"),
        ("list", rule_text(analysis)),
        ("h2", "Causes by class pair"),
        ("p", f"{counts[causes.MORPHOLOGICAL]} pairs attributed to morphological similarity, "
              f"{counts[causes.NON_ESSENTIAL]} to non-essential information interference, "
              f"{counts[causes.UNDETERMINED]} undetermined, {counts[causes.NOT_SIGNIFICANT]} not significant (of "
              f"{len(analysis.pairs)} ordered pairs). Listed: pairs significant in at least one model, with each "
              "architecture's pooled share of the class's errors."),
    ]
    unverified = sum(r.pattern_cause != r.cause for r in analysis.pairs)
    if erasure:
        blocks.append(("p", f"{unverified} model-dependent pairs were not verified by the erasure study and are "
                            "reported as undetermined."))
    rows = _pair_rows(analysis)
    blocks.append(("table", PAIR_HEADERS, rows) if rows else ("p", "No pair is significant in any model."))
    blocks += [("h2", "Confusion matrices")]
    blocks += [("figure", figure_file("confusion", n),
                f"{n}: row-normalised confusion and conditional confusion") for n in names]
    blocks.append(("h2", "Misclassification networks"))
    blocks += [("figure", figure_file("network", n), f"{n}: significant edges, labelled with P(j | i, error)")
               for n in names]
    blocks += [
        ("figure", "network-consensus.png", "consensus network: each edge labelled with how many models have it"),
        ("h2", "Similarity between models"),
        ("p", "Spearman rank correlation of the models' off-diagonal conditional confusions:"),
        ("table", ["model"] + names, [[a] + [_fmt(analysis.spearman[i, j]) for j in range(len(names))]
                                      for i, a in enumerate(names)]),
        ("figure", "similarity.png", "Spearman correlation of off-diagonal conditional confusions (left; blank "
                                     "where undefined) and Jaccard index of significant edges (right)"),
    ]
    if erasure:
        blocks += _erasure_blocks(erasure)
        blocks += interaction_blocks(analysis, erasure)
        if erasure.policies:
            blocks += policy_blocks(erasure, results.policy_paths,
                                     {n: m.accuracy for n, m in analysis.models.items()})
    blocks += report_controls.randomisation_blocks(results.randomisation)
    blocks += [("h2", "Deviations from the paper"), ("list", deviations(results))]
    if results.warnings:
        blocks += [("h2", "Warnings"), ("list", results.warnings)]
    blocks += [("h2", "Versions"), ("table", ["component", "version"], sorted(context.versions.items()))]
    return blocks


def _fmt(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:.2f}"


