"""One model's erasure runs from the live model: the test and validation runs, the report examples, the curves
and the saliency maps' randomisation check, gathered as `ModelRuns`. The repository path and the study's stage
both call `collect_runs`; a result file holds the same `ModelRuns` without the model (`inputs.results`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import torch

from miscause.jobs.analysis.erasure.curves import Curves, compute_curves
from miscause.jobs.analysis.erasure.examples import Example, examples
from miscause.jobs.analysis.erasure.randomisation import Randomisation, randomisation_study
from miscause.jobs.analysis.erasure.run import ErasureOptions, SplitRun, run_split
from miscause.jobs.analysis.inputs.images import Images
from miscause.jobs.analysis.inputs.repository_model import RepositoryModel


@dataclass(kw_only=True)
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
    examples: list[Example] = field(default_factory=list)
    curves: Curves | None = None
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    randomisation: Randomisation | None = None


TEST_ONLY = "test"  # the split that carries pixels, draws, geometry and the further methods


def split_options(erasure: ErasureOptions, split: str) -> ErasureOptions:
    """What `split` is run with: the test split every option; another (validation, for the policy fit) keeps only
    the study method's classes after erasure, so it runs no further method and one control draw."""
    if split == TEST_ONLY:
        return erasure
    return replace(erasure, sweep_methods=(erasure.saliency_method,), control_draws=1)


def collect_runs(model: RepositoryModel, splits: dict[str, Images], erasure: ErasureOptions, *, examples_count: int,
                 randomisation_images: int, device: torch.device, progress: bool = True,
                 seconds: dict[str, float] | None = None) -> ModelRuns:
    """The erasure runs of `model` on each of `splits` (`test` and `val`, in the order given), then on the test
    images the examples, the curves and the randomisation check; each part's wall time into `seconds`."""
    seconds = {} if seconds is None else seconds
    runs = {}
    for split, (images, labels, positions) in splits.items():
        began = time.perf_counter()
        runs[split] = run_split(model, images, labels, positions, split, split_options(erasure, split), device,
                                progress)
        seconds[f"erasure_{split}"] = seconds.get(f"erasure_{split}", 0.0) + time.perf_counter() - began
    test_images = splits["test"].images
    began = time.perf_counter()
    pictures = examples(model, test_images, runs["test"], erasure, examples_count, device)
    seconds["examples"] = time.perf_counter() - began
    began = time.perf_counter()
    curves = compute_curves(model, test_images, erasure, device)
    seconds["curves"] = time.perf_counter() - began
    began = time.perf_counter()
    check = randomisation_study(model, test_images, randomisation_images, erasure.batch_size, device)
    seconds["randomisation"] = time.perf_counter() - began
    return ModelRuns(name=model.name, source=str(model.path), training_split=model.config.training.get("split"),
                     test=runs["test"], val=runs["val"], examples=pictures, curves=curves,
                     normalization=(model.mean, model.std), randomisation=check)
