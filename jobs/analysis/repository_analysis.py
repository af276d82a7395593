"""The analysis run from a model repository and a dataset: inference, pattern analysis, erasure study, policy.

`analyze_repository` returns everything in memory; writing the report and the policies is the caller's.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from miscause.errors import MiscauseError
from miscause.jobs.analysis import policy_fit
from miscause.jobs.analysis.erasure import (
    ErasureOptions,
    ErasureResults,
    examples,
    infer,
    run_split,
    summarize,
    verified_pairs,
)
from miscause.jobs.analysis.misclassification import Analysis, AnalysisOptions, analyze_predictions, apply_erasure_check
from miscause.jobs.analysis.predictions import make_predictions
from miscause.jobs.analysis.repository_model import RepositoryModel, load_model
from miscause.jobs.training.data import Split, load_split

VALIDATION_GAP_WARNING = 0.02


@dataclass(frozen=True)
class RepositoryRequest:
    """What to analyse: models of a repository on a dataset, and how far to go."""

    repository: str
    models: tuple[str, ...]
    data: str | None = None
    erasure: ErasureOptions | None = None
    max_images: int | None = None
    examples: int = 8
    policy_min_gain: int = 3
    seed: int = 0
    batch_size: int = 256
    progress: bool = True


@dataclass
class RepositoryResult:
    """The pattern analysis, the erasure study's results (None without erasure), policy documents, data
    description, warnings."""

    analysis: Analysis
    erasure: ErasureResults | None
    policies: dict[str, dict] = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def subset(split: Split, limit: int | None, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, positions): the whole split, or `limit` images drawn without replacement (sorted)."""
    positions = np.arange(len(split))
    if limit is not None and limit < len(split):
        positions = np.sort(np.random.default_rng(seed).choice(len(split), limit, replace=False))
    return split.images[positions], split.labels[positions], positions


def check_classes(models: list[RepositoryModel], split: Split) -> None:
    """Every model must name the dataset's classes in the dataset's order."""
    for model in models:
        if model.classes != split.classes:
            raise MiscauseError(f"model {model.name} has classes {list(model.classes)}, the dataset "
                                f"{list(split.classes)}")


def validation_warning(model: RepositoryModel, val_accuracy: float, test_accuracy: float) -> str | None:
    """A warning when the policy is fitted on images the model trained on: its config says so, or its
    validation accuracy exceeds its test accuracy by more than two points."""
    split = model.config.training.get("split")
    if split in ("trainval", "val"):
        reason = f"its config says it was trained on the {split!r} split, which holds the validation images"
    elif val_accuracy - test_accuracy > VALIDATION_GAP_WARNING:
        reason = (f"its validation accuracy {val_accuracy:.3f} exceeds its test accuracy {test_accuracy:.3f}, "
                  "so it may have been trained on the validation images")
    else:
        return None
    return (f"{model.name}: {reason}; the policy fit is then optimistic and finds few errors to correct. "
            "The test evaluation is unaffected.")


def analyze_repository(request: RepositoryRequest, options: AnalysisOptions, device: torch.device,
                       created: str, versions: dict) -> RepositoryResult:
    """Run the models on the test split; with erasure options also the erasure study on test and the policy fit on
    val. `created` and `versions` are stamped into the policy documents."""
    options.check()
    if request.erasure:
        request.erasure.check()
    models = [load_model(request.repository, name, device) for name in request.models]
    test = load_split(request.data, "test")
    check_classes(models, test)
    images, labels, positions = subset(test, request.max_images, request.seed)
    data = {"path": str(request.data or os.environ["MISCAUSE_DATA"]), "split": "test",  # as the user named them
            "n": len(labels), "split_size": len(test), "repository": str(request.repository),
            "models": list(request.models)}
    data["description"] = (f"Models {', '.join(request.models)} from the repository `{data['repository']}`, run "
                           f"on {len(labels)} of the {len(test)} images of the test split of `{data['path']}`.")
    if request.erasure is None:
        predictions = [
            make_predictions(m.name, infer(m, images, request.batch_size, device, f"{m.name} test", request.progress),
                             labels, positions, m.classes, str(m.path))
            for m in models]
        return RepositoryResult(analyze_predictions(predictions, options), None, data=data)

    erasure = request.erasure
    val = load_split(request.data, "val")
    val_images, val_labels, val_positions = subset(val, request.max_images, request.seed)
    data["validation_n"] = len(val_labels)
    data["description"] += f" The correction policy is fitted on {len(val_labels)} validation-split images."
    test_runs = {m.name: run_split(m, images, labels, positions, "test", erasure, device, request.progress)
                 for m in models}
    analysis = analyze_predictions([test_runs[m.name].predictions(str(m.path)) for m in models], options)
    summaries = {name: summarize(run, erasure.default, analysis.models[name].significant, options.alpha,
                                 options.correction) for name, run in test_runs.items()}
    apply_erasure_check(analysis, {name: verified_pairs(s) for name, s in summaries.items()})
    fill = list(erasure.fill) if erasure.fill is not None else [0.0, 0.0, 0.0]
    policies, pictures, warnings = {}, {}, []
    for model in models:
        val_run = run_split(model, val_images, val_labels, val_positions, "val", erasure, device, request.progress)
        val_accuracy = float((val_run.predicted == val_labels).mean())
        warning = validation_warning(model, val_accuracy, analysis.models[model.name].accuracy)
        if warning:
            warnings.append(warning)
        fit = policy_fit.fit_policy(val_run, erasure.default, request.policy_min_gain)
        test_result = policy_fit.evaluate_policy(fit, test_runs[model.name], seed=request.seed)
        policies[model.name] = policy_fit.policy_document(
            model.name, fit, test_result, model.classes, erasure.saliency_method, fill,
            {"split": "val", "data": data["path"], "min_gain": request.policy_min_gain,
             "accuracy": val_accuracy}, created, versions)
        pictures[model.name] = examples(model, images, test_runs[model.name], erasure, request.examples, device)
    settings = {**asdict(erasure), "split": "test", "fill": fill}
    return RepositoryResult(analysis, ErasureResults(summaries, policies, pictures, settings), policies, data,
                            warnings)
