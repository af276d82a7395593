"""The erasure analysis from finished runs: patterns, erasure summaries, cause check, policy fit, warnings.

`analyze_runs` needs no model: it takes each model's test and validation `SplitRun`s and report examples,
computed from a live model (`repository_analysis`, the study's stage) or read back from a result file
(`results`), so every source of runs yields the same report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from miscause.jobs.analysis import policy_fit
from miscause.jobs.analysis.curves import Curves, summarize_curves
from miscause.jobs.analysis.erasure import ErasureOptions, ErasureResults, SplitRun, summarize, verified_pairs
from miscause.jobs.analysis.fills import constant_values, fill_name
from miscause.jobs.analysis.misclassification import Analysis, AnalysisOptions, analyze_predictions, apply_erasure_check
from miscause.jobs.analysis.randomisation import Randomisation, randomisation_summaries

VALIDATION_GAP_WARNING = 0.02


@dataclass
class ModelRuns:
    """One model's erasure runs on the test and validation splits, its report examples, and provenance:
    `source` (what the report names as the model's source) and `training_split` (the split it trained on);
    its deletion and insertion curves on test images, and its normalisation (mean, std), which a constant
    fill such as `black` needs to be stated in normalised units; its model-randomisation check on test images
    (None where it did not run or its result file does not carry it)."""

    name: str
    source: str
    training_split: str | None
    test: SplitRun
    val: SplitRun
    examples: list[dict] = field(default_factory=list)
    curves: Curves | None = None
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    randomisation: Randomisation | None = None


@dataclass
class StudyResult:
    """The pattern analysis, the erasure study's results (None without erasure), policy documents, data
    description, warnings, and per model the model-randomisation check's summary (None where no model ran it)."""

    analysis: Analysis
    erasure: ErasureResults | None
    policies: dict[str, dict] = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    randomisation: dict[str, dict] | None = None


def validation_warning(name: str, training_split: str | None, val_accuracy: float,
                       test_accuracy: float) -> str | None:
    """A warning when the validation images may be training images: the training split holds them (the policy
    is then cross-fitted on the test split), or the validation accuracy exceeds the test accuracy by more than two
    points (the policy fitted on validation images may then be optimistic)."""
    if training_split in ("trainval", "val"):
        return (f"{name}: its config says it was trained on the {training_split!r} split, which holds the "
                f"validation images; its policy is cross-fitted on the test split instead "
                f"({policy_fit.FOLDS} folds).")
    if val_accuracy - test_accuracy > VALIDATION_GAP_WARNING:
        return (f"{name}: its validation accuracy {val_accuracy:.3f} exceeds its test accuracy "
                f"{test_accuracy:.3f}, so it may have been trained on the validation images; the policy fit is "
                "then optimistic and finds few errors to correct. The test evaluation is unaffected.")
    return None


def policy_fill(model: ModelRuns, erasure: ErasureOptions) -> list[float] | None:
    """The study's fill as the policy states it, one normalised value per channel; None for a per-image fill."""
    if model.normalization is None and erasure.fill == "black":
        return None
    return constant_values(erasure.fill, *(model.normalization or ((0.0,) * 3, (1.0,) * 3)))


def analyze_runs(models: list[ModelRuns], erasure: ErasureOptions, options: AnalysisOptions, data: dict,
                 policy_min_gain: int, seed: int, created: str, versions: dict,
                 control: str = "random") -> StudyResult:
    """Patterns on the test runs, the erasure summaries (pairs verified against `control`) and cause check, and
    per model the policy fitted on the validation run and evaluated on the test run, where the fill is one
    the service can apply. `created` and `versions` are stamped into the policies."""
    analysis = analyze_predictions([m.test.predictions(m.source) for m in models], options)
    summaries = {m.name: summarize(m.test, erasure.default, analysis.models[m.name].significant, options.alpha,
                                   options.correction, control) for m in models}
    for m in models:
        summaries[m.name]["curves"] = (
            {**summarize_curves(m.curves, m.test.predicted != m.test.labels),
             "deletion_fill": fill_name(erasure.fill), "insertion_canvas": erasure.insertion_canvas}
            if m.curves else None)
    apply_erasure_check(analysis, {name: verified_pairs(s) for name, s in summaries.items()})
    policies, warnings = {}, []
    for model in models:
        val_accuracy = float((model.val.predicted == model.val.labels).mean())
        warning = validation_warning(model.name, model.training_split, val_accuracy,
                                     analysis.models[model.name].accuracy)
        if warning:
            warnings.append(warning)
        fill = policy_fill(model, erasure)
        if fill is None:
            warnings.append(f"{model.name}: no correction policy: the fill {fill_name(erasure.fill)!r} is not one "
                            "value per channel, which is all the service can apply")
            continue
        fit, test_result, fitted_on = policy_fit.honest_fit(model.val, model.test, model.training_split,
                                                            erasure.default, policy_min_gain, seed)
        policies[model.name] = policy_fit.policy_document(
            model.name, fit, test_result, model.test.classes, erasure.saliency_method, fill,
            {**fitted_on, "data": data["path"], "min_gain": policy_min_gain, "accuracy": val_accuracy},
            created, versions)
    settings = {**asdict(erasure), "split": "test", "fill": fill_name(erasure.fill), "control": control}
    pictures = {m.name: m.examples for m in models}
    return StudyResult(analysis, ErasureResults(summaries, policies, pictures, settings), policies, data, warnings,
                       randomisation_summaries({m.name: m.randomisation for m in models}))
