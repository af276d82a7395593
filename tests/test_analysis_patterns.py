"""Pattern analysis on synthetic predictions with planted structure: cause assignment must recover it exactly."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from miscause.jobs.analysis.inputs.predictions import make_predictions
from miscause.jobs.analysis.patterns.causes import (
    MORPHOLOGICAL,
    NON_ESSENTIAL,
    NOT_SIGNIFICANT,
    UNDETERMINED,
    assign_causes,
    quorum,
)
from miscause.jobs.analysis.patterns.confusion import conditional_confusion, confusion_matrix, row_normalized
from miscause.jobs.analysis.patterns.misclassification import AnalysisOptions, analyze_predictions, apply_erasure_check
from miscause.jobs.analysis.patterns.model_dependence import MODEL_DEPENDENT, SHARED
from miscause.jobs.analysis.patterns.model_dependence import UNDETERMINED as OPEN
from miscause.jobs.analysis.patterns.significance import adjust, bootstrap_interval, mcnemar_greater

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
COMMON = [("cat", "dog"), ("automobile", "truck"), ("deer", "horse")]
PARTICULAR = {"m0": [("bird", "airplane")], "m2": [("ship", "frog"), ("dog", "cat")]}
# with replicate groups: architecture x (three seeds) has two confusions of its own
GROUPS = (("x", ("x0", "x1", "x2")), ("y", ("y0", "y1", "y2")))
OWN = [("bird", "airplane"), ("ship", "frog")]


def synthetic_predictions(name: str, planted: list[tuple[str, str]], seed: int, per_class: int = 600,
                          error_rate: float = 0.15, planted_share: float = 0.45):
    """Predictions where each true class errs at `error_rate`; a planted pair takes `planted_share` of its
    class's errors, every other error lands uniformly on the remaining classes."""
    rng = np.random.default_rng(seed)
    k = len(CLASSES)
    targets = {CLASSES.index(t): CLASSES.index(p) for t, p in planted}
    labels, predicted = [], []
    for i in range(k):
        wrong = rng.random(per_class) < error_rate
        others = [j for j in range(k) if j != i]
        probs = np.full(k - 1, 1.0 / (k - 1))
        if i in targets:
            probs = np.full(k - 1, (1 - planted_share) / (k - 2))
            probs[others.index(targets[i])] = planted_share
        pred = np.where(wrong, rng.choice(others, size=per_class, p=probs), i)
        labels.append(np.full(per_class, i))
        predicted.append(pred)
    labels, predicted = np.concatenate(labels), np.concatenate(predicted)
    logits = rng.normal(0, 0.1, (len(labels), k)).astype(np.float32)
    logits[np.arange(len(labels)), predicted] += 5
    return make_predictions(name, logits, labels, np.arange(len(labels)), CLASSES)


def planted_models(n_models: int = 4) -> list:
    return [synthetic_predictions(f"m{m}", COMMON + PARTICULAR.get(f"m{m}", []), seed=m) for m in range(n_models)]


def replicated_models() -> list:
    return [synthetic_predictions(name, COMMON + (OWN if arch == "x" else []), seed=10 + n, per_class=2000)
            for n, (arch, name) in enumerate((arch, name) for arch, names in GROUPS for name in names)]


def replicated_analysis():
    return analyze_predictions(replicated_models(), AnalysisOptions(replicates=GROUPS, min_count=50))


def causes(analysis) -> dict[tuple[str, str], tuple[str, list[str]]]:
    return {(r.true, r.pred): (r.cause, r.models) for r in analysis.pairs}


def test_cause_assignment_recovers_planted_causes_exactly() -> None:
    analysis = replicated_analysis()
    found = causes(analysis)
    assert len(found) == 90
    everyone = ["x0", "x1", "x2", "y0", "y1", "y2"]
    expected = {pair: (MORPHOLOGICAL, everyone) for pair in COMMON}
    expected.update({pair: (NON_ESSENTIAL, ["x0", "x1", "x2"]) for pair in OWN})
    assert {pair: value for pair, value in found.items() if value[0] in (MORPHOLOGICAL, NON_ESSENTIAL)} == expected
    assert analysis.quorum == 2 and analysis.dependence.family_size == 5


def test_quorum_counts_architectures_and_tolerance() -> None:
    # three architectures of two seeds; cat -> dog (0, 1) is an edge in both seeds of a and b, one seed of c
    k = 3
    edge = np.zeros((k, k), dtype=bool)
    edge[0, 1] = True
    none = np.zeros((k, k), dtype=bool)
    significant = [edge, edge, edge, edge, edge, none]
    architecture = ["a", "a", "b", "b", "c", "c"]
    outcome = np.full((k, k), OPEN, dtype=object)
    outcome[0, 1] = SHARED
    assert assign_causes(significant, architecture, 0, outcome)[0, 1] == UNDETERMINED  # c: one of two seeds
    assert assign_causes(significant, architecture, 1, outcome)[0, 1] == MORPHOLOGICAL
    outcome[0, 1] = MODEL_DEPENDENT
    assert assign_causes(significant, architecture, 1, outcome)[0, 1] == NON_ESSENTIAL
    outcome[0, 1] = OPEN
    assert assign_causes(significant, architecture, 1, outcome)[0, 1] == UNDETERMINED
    assert assign_causes([none] * 6, architecture, 1, outcome)[0, 1] == NOT_SIGNIFICANT


def test_without_replicates_edges_stay_undetermined() -> None:
    single = causes(analyze_predictions(planted_models(1)))
    assert single[("bird", "airplane")] == (UNDETERMINED, ["m0"])
    pair = causes(analyze_predictions(planted_models(2), AnalysisOptions(tolerance=1)))
    assert pair[("cat", "dog")] == (UNDETERMINED, ["m0", "m1"])
    assert {cause for cause, _ in pair.values()} <= {UNDETERMINED, NOT_SIGNIFICANT}
    assert [quorum(m, 1) for m in (1, 2, 3, 4, 6)] == [1, 2, 2, 3, 5]


def test_networks_similarity_and_consensus() -> None:
    analysis = analyze_predictions(planted_models(4))
    m2 = analysis.models["m2"].network
    assert set(m2.edges) == set(COMMON) | set(PARTICULAR["m2"])
    assert m2.edges["cat", "dog"]["count"] == analysis.models["m2"].counts[3, 5]
    consensus = analysis.consensus
    assert consensus.edges["cat", "dog"]["n_models"] == 4
    assert consensus.edges["ship", "frog"]["models"] == "m2"
    assert np.allclose(np.diag(analysis.spearman), 1.0)
    assert analysis.jaccard[0, 1] == pytest.approx(3 / 4)
    assert analysis.jaccard[1, 3] == pytest.approx(1.0)
    graph_copy = nx.DiGraph(m2)
    assert graph_copy.number_of_nodes() == 10


def test_confusion_matrices() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 2, 1, 0, 0])
    counts = confusion_matrix(labels, predicted, 4)
    assert counts.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert row_normalized(counts)[0].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0])
    assert row_normalized(counts)[3].tolist() == [0, 0, 0, 0]
    conditional = conditional_confusion(counts)
    assert conditional[0].tolist() == [0, 0.5, 0.5, 0]
    assert conditional[1].tolist() == [1, 0, 0, 0]


def test_corrections_and_tests() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.5])
    assert adjust(p, "holm").tolist() == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert adjust(p, "bh").tolist() == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])
    assert mcnemar_greater(0, 0) == 1.0
    assert mcnemar_greater(10, 0) == pytest.approx(0.5 ** 10)
    gains = np.r_[np.ones(60), -np.ones(20), np.zeros(920)]
    low, high = bootstrap_interval(gains, seed=1)
    assert low < 0.04 < high and low > 0
    assert bootstrap_interval(gains, seed=1) == (low, high) and bootstrap_interval(np.zeros(5)) == (0.0, 0.0)


def test_model_without_errors_and_unpredicted_class() -> None:
    perfect_labels = np.repeat(np.arange(10), 50)
    logits = np.eye(10, dtype=np.float32)[perfect_labels] * 3
    perfect = make_predictions("perfect", logits, perfect_labels, np.arange(500), CLASSES)
    noisy = synthetic_predictions("noisy", COMMON, seed=5, per_class=50)
    noisy_sorted = make_predictions("noisy", noisy.logits, noisy.labels, noisy.indices, CLASSES)
    analysis = analyze_predictions([perfect, noisy_sorted])
    model = analysis.models["perfect"]
    assert model.errors == 0 and model.accuracy == 1.0
    assert not model.significant.any() and model.network.number_of_edges() == 0
    assert not model.conditional.any()
    assert np.isnan(analysis.spearman[0, 1])
    assert model.counts[:, 9].sum() == 50
    never = make_predictions("never", np.eye(10, dtype=np.float32)[np.zeros(500, int)], perfect_labels,
                             np.arange(500), CLASSES)
    lazy = analyze_predictions([never]).models["never"]
    assert lazy.counts[:, 1:].sum() == 0 and lazy.accuracy == pytest.approx(0.1)


def test_erasure_check_settles_non_essential_pairs() -> None:
    analysis = replicated_analysis()
    apply_erasure_check(analysis, {"x2": [("ship", "frog")], "y1": [("cat", "dog")]})
    found = causes(analysis)
    assert found[("ship", "frog")][0] == NON_ESSENTIAL
    assert found[("bird", "airplane")][0] == UNDETERMINED
    assert found[("cat", "dog")][0] == MORPHOLOGICAL
    record = analysis.pair("bird", "airplane")
    assert record.pattern_cause == NON_ESSENTIAL and record.erasure_verified_models == []
