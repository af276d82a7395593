"""The analysis run from a model repository and a dataset: inference, pattern analysis, erasure study, policy.

`analyze_repository` returns everything in memory; writing the report and the policies is the caller's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from miscause.defaults import RANDOMISATION_IMAGES
from miscause.errors import MiscauseError
from miscause.jobs.analysis.curves import compute_curves
from miscause.jobs.analysis.erasure import ErasureOptions, examples, infer, run_split
from miscause.jobs.analysis.misclassification import AnalysisOptions, analyze_predictions
from miscause.jobs.analysis.predictions import make_predictions
from miscause.jobs.analysis.randomisation import randomisation_study, randomisation_summaries
from miscause.jobs.analysis.repository_model import RepositoryModel, load_model
from miscause.jobs.analysis.run_analysis import ModelRuns, StudyResult, analyze_runs
from miscause.jobs.training.data import Split, load_split


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
    control: str = "random"
    randomisation_images: int = RANDOMISATION_IMAGES


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


def analyze_repository(request: RepositoryRequest, options: AnalysisOptions, device: torch.device,
                       created: str, versions: dict) -> StudyResult:
    """Run the models on the test split and the model-randomisation check on some of its images; with erasure
    options also the erasure study on test and the policy fit on val. `created` and `versions` are stamped into
    the policy documents."""
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
    checks = {m.name: randomisation_study(m, images, request.randomisation_images, request.batch_size,
                                          request.seed, device) for m in models}
    data["description"] = (f"Models {', '.join(request.models)} from the repository `{data['repository']}`, run "
                           f"on {len(labels)} of the {len(test)} images of the test split of `{data['path']}`.")
    if request.erasure is None:
        predictions = [
            make_predictions(m.name, infer(m, images, request.batch_size, device, f"{m.name} test", request.progress),
                             labels, positions, m.classes, str(m.path))
            for m in models]
        return StudyResult(analyze_predictions(predictions, options), None, data=data,
                           randomisation=randomisation_summaries(checks))

    erasure = request.erasure
    val = load_split(request.data, "val")
    val_images, val_labels, val_positions = subset(val, request.max_images, request.seed)
    data["validation_n"] = len(val_labels)
    data["description"] += f" The correction policy is fitted on {len(val_labels)} validation-split images."
    runs = []
    for model in models:
        test_run = run_split(model, images, labels, positions, "test", erasure, device, request.progress)
        val_run = run_split(model, val_images, val_labels, val_positions, "val", erasure, device, request.progress)
        runs.append(ModelRuns(model.name, str(model.path), model.config.training.get("split"), test_run, val_run,
                              examples(model, images, test_run, erasure, request.examples, device),
                              compute_curves(model, images, erasure, device), (model.mean, model.std),
                              checks[model.name]))
    return analyze_runs(runs, erasure, options, data, request.policy_min_gain, request.seed, created, versions,
                        request.control)
