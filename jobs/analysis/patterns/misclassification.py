"""Misclassification patterns of several models on one split, and the cause attributed to each class pair.

`analyze_predictions` is the library entry point: predictions in, an `Analysis` out, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from miscause.errors import MiscauseError
from miscause.jobs.analysis.inputs.predictions import Predictions, align
from miscause.jobs.analysis.patterns import causes
from miscause.jobs.analysis.patterns.confusion import (
    class_errors,
    conditional_confusion,
    confusion_matrix,
    row_normalized,
)
from miscause.jobs.analysis.patterns.model_dependence import (
    DEFAULT_MARGIN,
    ModelDependence,
    PairDependence,
    model_dependence,
)
from miscause.jobs.analysis.patterns.networks import consensus_network, misclassification_network
from miscause.jobs.analysis.patterns.replicates import Groups, architectures, check_replicates
from miscause.jobs.analysis.patterns.significance import CORRECTIONS
from miscause.jobs.analysis.patterns.similarity import jaccard_matrix, spearman_matrix


@dataclass(frozen=True, kw_only=True)
class AnalysisOptions:
    """Significance and cause-assignment thresholds (the CLI's defaults), the replicate groups the dependence test
    needs ((group name, its models) pairs), the equivalence margin on P(j | i, error), and the seed of the effect's
    bootstrap and the power simulation."""

    alpha: float = 0.05
    correction: str = "holm"
    min_count: int = 5
    tolerance: int = 1
    replicates: tuple[tuple[str, tuple[str, ...]], ...] = ()
    margin: float = DEFAULT_MARGIN
    seed: int = 0

    @property
    def groups(self) -> Groups:
        return dict(self.replicates)

    def check(self) -> None:
        """A `MiscauseError` for an option out of range."""
        if not 0 < self.alpha < 1:
            raise MiscauseError(f"--alpha must lie in (0, 1), got {self.alpha}")
        if self.correction not in CORRECTIONS:
            raise MiscauseError(f"--correction must be one of {', '.join(CORRECTIONS)}")
        if self.min_count < 1:
            raise MiscauseError(f"--min-count must be at least 1, got {self.min_count}")
        if self.tolerance < 0:
            raise MiscauseError(f"--tolerance must be at least 0, got {self.tolerance}")
        if not 0 < self.margin < 1:
            raise MiscauseError(f"--margin must lie in (0, 1), got {self.margin}")


@dataclass
class ModelPattern:
    """One model's error pattern: matrices [K,K] and its misclassification network."""

    name: str
    counts: np.ndarray
    rates: np.ndarray
    conditional: np.ndarray
    p_values: np.ndarray
    p_adjusted: np.ndarray
    significant: np.ndarray
    network: nx.DiGraph

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def errors(self) -> int:
        return int(class_errors(self.counts).sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.counts) / self.n)


@dataclass(frozen=True, kw_only=True)
class ModelEdge:
    """One model's numbers for one ordered pair: its count, the class's errors, the share of them (the conditional
    probability) and the edge test."""

    count: int
    errors: int
    conditional: float
    p_value: float
    p_adjusted: float
    significant: bool


@dataclass(kw_only=True)
class PairRecord:
    """One ordered pair (true != pred): its cause (after the erasure check, when it ran) and the pattern's cause,
    the models and architectures with the edge, each model's numbers, the dependence result, and the models where
    erasure verified it (None without an erasure study)."""

    true: str
    pred: str
    cause: str
    pattern_cause: str
    models: list[str]
    architectures: list[str]
    per_model: dict[str, ModelEdge]
    dependence: PairDependence
    erasure_verified_models: list[str] | None = None


@dataclass(kw_only=True)
class Analysis:
    """Everything the pattern analysis found; `pairs` holds one record per ordered class pair, `quorum` counts
    architectures."""

    classes: tuple[str, ...]
    options: AnalysisOptions
    models: dict[str, ModelPattern]
    consensus: nx.DiGraph
    spearman: np.ndarray
    jaccard: np.ndarray
    quorum: int
    dependence: ModelDependence
    pairs: list[PairRecord] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

    def pair(self, true: str, pred: str) -> PairRecord:
        """The record of the ordered pair true -> pred."""
        return next(r for r in self.pairs if (r.true, r.pred) == (true, pred))


def model_pattern(predictions: Predictions, options: AnalysisOptions) -> ModelPattern:
    """Confusion, conditional confusion, edge tests and network of one model."""
    k = len(predictions.classes)
    counts = confusion_matrix(predictions.labels, predictions.predicted, k)
    conditional = conditional_confusion(counts)
    p, adjusted, significant = causes.significant_edges(counts, options.alpha, options.correction,
                                                             options.min_count)
    network = misclassification_network(predictions.classes, counts, conditional, significant, p, adjusted)
    return ModelPattern(predictions.name, counts, row_normalized(counts), conditional, p, adjusted, significant,
                        network)


def pair_records(classes: tuple[str, ...], models: dict[str, ModelPattern], tolerance: int,
                 dependence: ModelDependence, architecture: list[str]) -> list[PairRecord]:
    """One record per ordered pair (true != pred), in class order: cause, models and architectures with the edge,
    each model's numbers, the dependence result."""
    patterns = list(models.values())
    significant = [m.significant for m in patterns]
    outcome = np.full(significant[0].shape, "", dtype=object)
    for (i, j), pair in dependence.pairs.items():
        outcome[i, j] = pair.outcome
    cause = causes.assign_causes(significant, architecture, tolerance, outcome)
    edges = causes.architecture_edges(significant, architecture)
    errors = {m.name: class_errors(m.counts) for m in patterns}
    records = []
    for i, true in enumerate(classes):
        for j, pred in enumerate(classes):
            if i == j:
                continue
            records.append(PairRecord(
                true=true, pred=pred, cause=str(cause[i, j]), pattern_cause=str(cause[i, j]),
                models=[m.name for m in patterns if m.significant[i, j]],
                architectures=[a for a, e in edges.items() if e[i, j]],
                per_model={m.name: ModelEdge(count=int(m.counts[i, j]), errors=int(errors[m.name][i]),
                                             conditional=float(m.conditional[i, j]),
                                             p_value=float(m.p_values[i, j]), p_adjusted=float(m.p_adjusted[i, j]),
                                             significant=bool(m.significant[i, j])) for m in patterns},
                dependence=dependence.pairs[i, j]))
    return records


def analyze_predictions(predictions: dict[str, Predictions] | list[Predictions],
                        options: AnalysisOptions | None = None) -> Analysis:
    """The pattern analysis of models evaluated on the same split (checked: same classes, samples, labels)."""
    options = options or AnalysisOptions()
    options.check()
    given = list(predictions.values()) if isinstance(predictions, dict) else list(predictions)
    check_replicates(options.groups, {p.name: p.classes for p in given})
    aligned = align(given)
    classes = next(iter(aligned.values())).classes
    models = {name: model_pattern(p, options) for name, p in aligned.items()}
    patterns = list(models.values())
    first = next(iter(aligned.values()))
    architecture = architectures(list(aligned), options.groups)
    dependence = model_dependence(first.labels, [p.predicted for p in aligned.values()], [m.counts for m in patterns],
                                  list(aligned), architecture, bool(options.groups), alpha=options.alpha,
                                  correction=options.correction, min_count=options.min_count,
                                  margin=options.margin, seed=options.seed)
    return Analysis(
        classes=classes,
        options=options,
        models=models,
        consensus=consensus_network(classes, {name: m.network for name, m in models.items()}),
        spearman=spearman_matrix([m.conditional for m in patterns]),
        jaccard=jaccard_matrix([m.significant for m in patterns]),
        quorum=causes.quorum(len(dependence.architectures), options.tolerance),
        pairs=pair_records(classes, models, options.tolerance, dependence, architecture),
        sources={name: p.source for name, p in aligned.items()},
        dependence=dependence,
    )


def apply_erasure_check(analysis: Analysis, verified: dict[str, list[tuple[str, str]]]) -> None:
    """Record which pairs the erasure study verified in which models, and settle each pair's cause on it."""
    for record in analysis.pairs:
        key = (record.true, record.pred)
        models = [name for name, pairs in verified.items() if key in pairs]
        record.erasure_verified_models = models
        record.cause = causes.verified_cause(record.pattern_cause, record.models, models)
