"""The analysis as one pipeline: inputs -> patterns -> erasure -> results, which `report/` only renders.

`analyze_runs` needs no model: it takes each model's `ModelRuns` (test and validation `SplitRun`s, examples,
curves, randomisation check), collected from a live model (`analyze_repository`, the study's stage, both through
`erasure.collect.collect_runs`) or read back from a result file (`inputs.results`), so every source of runs
yields the same report. Every number the report shows is computed here, once, into `Results`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from miscause.defaults import RANDOMISATION_IMAGES
from miscause.jobs.analysis.erasure import policy_fit, policy_selection
from miscause.jobs.analysis.erasure.cause_interaction import CauseInteraction, cause_interaction
from miscause.jobs.analysis.erasure.collect import ModelRuns, collect_runs
from miscause.jobs.analysis.erasure.controls import DRAWS
from miscause.jobs.analysis.erasure.curves import CurveSummary, summarize_curves
from miscause.jobs.analysis.erasure.examples import Example
from miscause.jobs.analysis.erasure.fills import constant_values, fill_name
from miscause.jobs.analysis.erasure.randomisation import (
    ModelRandomisation,
    randomisation_study,
    randomisation_summaries,
)
from miscause.jobs.analysis.erasure.run import ErasureOptions, infer
from miscause.jobs.analysis.erasure.summaries import PRIMARY_CONTROL, Endpoints, ErasureSummary, endpoints, summarize
from miscause.jobs.analysis.erasure.verification_power import PairPower, verification_power
from miscause.jobs.analysis.inputs.data_record import data_record
from miscause.jobs.analysis.inputs.images import subset
from miscause.jobs.analysis.inputs.predictions import make_predictions
from miscause.jobs.analysis.inputs.repository_model import load_model
from miscause.jobs.analysis.patterns.misclassification import (
    Analysis,
    AnalysisOptions,
    analyze_predictions,
    apply_erasure_check,
)
from miscause.jobs.training.data import load_split
from miscause.jobs.training.evaluate import check_classes


@dataclass(frozen=True, kw_only=True)
class Context:
    """When and how the analysis ran, stamped into the report and the policies."""

    created: str
    command: str
    versions: dict


@dataclass(frozen=True, kw_only=True)
class Study:
    """The erasure study as run and judged: its options, the control a pair must beat to be verified, the net
    images a policy rule must gain where it is fitted, and the seed of the policy's bootstrap and folds."""

    erasure: ErasureOptions
    control: str = PRIMARY_CONTROL
    policy_min_gain: int = 3
    seed: int = 0


@dataclass(kw_only=True)
class ErasureResults:
    """The erasure study's outputs per model: the endpoints (the primary one first), the test-split summary, the
    deletion and insertion curves (None where none were run), the policy document, the example images, erasure by
    cause and the power of the verification; and the study as it ran, on which split."""

    study: Study
    split: str = "test"
    summaries: dict[str, ErasureSummary]
    endpoints: dict[str, Endpoints] = field(default_factory=dict)
    curves: dict[str, CurveSummary | None] = field(default_factory=dict)
    policies: dict[str, dict] = field(default_factory=dict)
    examples: dict[str, list[Example]] = field(default_factory=dict)
    cause_interaction: dict[str, CauseInteraction] = field(default_factory=dict)
    verification_power: dict[str, list[PairPower]] = field(default_factory=dict)


@dataclass(kw_only=True)
class Results:
    """Everything the report shows: the patterns, the erasure study (None without one), per model the
    cascading randomisation check (None where no model ran it), the data description, warnings, the context,
    and where the policies were written (filled in by the caller that writes them)."""

    analysis: Analysis
    context: Context
    data: dict = field(default_factory=dict)
    erasure: ErasureResults | None = None
    randomisation: dict[str, ModelRandomisation] | None = None
    warnings: list[str] = field(default_factory=list)
    policy_paths: dict[str, str] = field(default_factory=dict)

    @property
    def policies(self) -> dict[str, dict]:
        return self.erasure.policies if self.erasure else {}


@dataclass(frozen=True, kw_only=True)
class RepositoryRequest:
    """What to analyse: models of a repository on a dataset, and how far to go (no erasure study: `study` None)."""

    repository: str
    models: tuple[str, ...]
    data: str | None = None
    study: Study | None = None
    max_images: int | None = None
    examples: int = 8
    seed: int = 0
    batch_size: int = 256
    progress: bool = True
    randomisation_images: int = RANDOMISATION_IMAGES


VALIDATION_GAP_WARNING = 0.02


def validation_warning(name: str, training_split: str | None, val_accuracy: float,
                       test_accuracy: float) -> str | None:
    """A warning when the validation images may be training images: the training split holds them (the policy
    is then cross-fitted on the test split), or the validation accuracy exceeds the test accuracy by more than two
    points (the policy fitted on validation images may then be optimistic)."""
    if training_split in ("trainval", "val"):
        return (f"{name}: its config says it was trained on the {training_split!r} split, which holds the "
                f"validation images; its policy is cross-fitted on the test split instead "
                f"({policy_selection.FOLDS} folds).")
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


def analyze_runs(models: list[ModelRuns], study: Study, options: AnalysisOptions, context: Context,
                 data: dict) -> Results:
    """Patterns on the test runs, the erasure summaries (pairs verified against the study's control), the cause
    check, erasure by cause and the verification's power, and per model the policy fitted on images it never
    trained on and scored on the test run, where the fill is one the service can apply."""
    erasure = study.erasure
    analysis = analyze_predictions([m.test.predictions(m.source) for m in models], options)
    summaries = {m.name: summarize(m.test, erasure.default, analysis.models[m.name].significant, options.alpha,
                                   options.correction, study.control, study.seed) for m in models}
    primary = {m.name: endpoints(m.test, erasure.default, erasure.saliency_method, erasure.fill) for m in models}
    curves = {m.name: summarize_curves(m.curves, m.test.predicted != m.test.labels, fill_name(erasure.fill),
                                       erasure.insertion_canvas, options.alpha) if m.curves else None
              for m in models}
    apply_erasure_check(analysis, {name: s.verified_pairs for name, s in summaries.items()})
    policies, warnings = {}, []
    warnings += [f"{name}: the controls took {e.primary.draws} draws per image, fewer than the {DRAWS} the primary "
                 "endpoint asks for" for name, e in primary.items() if e.primary.draws < DRAWS]
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
        honest = policy_selection.honest_fit(model.val, model.test, model.training_split, erasure.default,
                                             study.policy_min_gain, study.seed)
        policies[model.name] = policy_fit.policy_document(
            model.name, honest.written, honest.test, model.test.classes, erasure.saliency_method, fill,
            {**honest.fitted_on, "data": data["path"], "min_gain": study.policy_min_gain, "accuracy": val_accuracy},
            honest.selection, context.created, context.versions)
    results = ErasureResults(study=study, summaries=summaries, endpoints=primary, curves=curves, policies=policies,
                             examples={m.name: m.examples for m in models},
                             cause_interaction=cause_interaction(analysis, summaries),
                             verification_power=verification_power(summaries, options.alpha, options.correction))
    return Results(analysis=analysis, context=context, data=data, erasure=results, warnings=warnings,
                   randomisation=randomisation_summaries({m.name: m.randomisation for m in models},
                                                         options.replicates))


def analyze_repository(request: RepositoryRequest, options: AnalysisOptions, device: torch.device,
                       context: Context) -> Results:
    """Run the models on the test split and the model-randomisation check on some of its images; with a study
    also the erasure study on test and the policy fit on val; `options` as checked by the caller."""
    if request.study:
        request.study.erasure.check()
    models = [load_model(request.repository, name, device) for name in request.models]
    test = load_split(request.data, "test")
    for model in models:
        check_classes(model.classes, test, f"model {model.name}")
    images = subset(test, request.max_images, request.seed)
    val = subset(load_split(request.data, "val"), request.max_images, request.seed) if request.study else None
    data = data_record(f"Models {', '.join(request.models)} from the repository `{request.repository}`, run",
                       len(images.labels), path=str(request.data or os.environ["MISCAUSE_DATA"]),  # as named
                       split_size=len(test), validation_n=None if val is None else len(val.labels),
                       repository=str(request.repository), models=list(request.models))
    if val is None:
        checks = {m.name: randomisation_study(m, images.images, request.randomisation_images, request.batch_size,
                                              device) for m in models}
        predictions = [
            make_predictions(m.name, infer(m, images.images, request.batch_size, device, f"{m.name} test",
                                           request.progress), images.labels, images.positions, m.classes, str(m.path))
            for m in models]
        return Results(analysis=analyze_predictions(predictions, options), context=context, data=data,
                       randomisation=randomisation_summaries(checks, options.replicates))
    runs = [collect_runs(model, {"test": images, "val": val}, request.study.erasure, examples_count=request.examples,
                         randomisation_images=request.randomisation_images, device=device,
                         progress=request.progress) for model in models]
    return analyze_runs(runs, request.study, options, context, data)
