"""Pattern analysis on synthetic predictions with planted structure: cause assignment must recover it exactly."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from miscause.jobs.analysis.inputs.predictions import make_predictions
from miscause.jobs.analysis.patterns.causes import MORPHOLOGICAL, NON_ESSENTIAL, NOT_SIGNIFICANT, quorum
from miscause.jobs.analysis.patterns.confusion import conditional_confusion, confusion_matrix, row_normalized
from miscause.jobs.analysis.patterns.misclassification import AnalysisOptions, analyze_predictions, apply_erasure_check
from miscause.jobs.analysis.patterns.significance import adjust, mcnemar_greater, mean_interval

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SHARED = [("cat", "dog"), ("automobile", "truck"), ("deer", "horse")]
PARTICULAR = {"m0": [("bird", "airplane")], "m2": [("ship", "frog"), ("dog", "cat")]}


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
    return [synthetic_predictions(f"m{m}", SHARED + PARTICULAR.get(f"m{m}", []), seed=m) for m in range(n_models)]


def causes(analysis) -> dict[tuple[str, str], tuple[str, list[str]]]:
    return {(r["true"], r["pred"]): (r["cause"], r["models"]) for r in analysis.pairs}


def test_cause_assignment_recovers_planted_causes_exactly() -> None:
    analysis = analyze_predictions(planted_models(4))
    found = causes(analysis)
    assert len(found) == 90
    expected = {pair: (MORPHOLOGICAL, ["m0", "m1", "m2", "m3"]) for pair in SHARED}
    for name, pairs in PARTICULAR.items():
        expected.update({pair: (NON_ESSENTIAL, [name]) for pair in pairs})
    assert {pair: value for pair, value in found.items() if value[0] != NOT_SIGNIFICANT} == expected
    assert analysis.quorum == 3


def test_tolerance_lets_shared_pairs_miss_one_model() -> None:
    models = planted_models(4)
    # m3 loses the cat -> dog confusion: a shared pair now significant in three of four models, yet m3's rate
    # (17 of 600 cats) is not shown to differ from the others' (43, 44, 43) after correction over 90 pairs
    models[3] = synthetic_predictions("m3", [("automobile", "truck"), ("deer", "horse")], seed=3)
    strict = analyze_predictions(models, AnalysisOptions(tolerance=0))
    tolerant = causes(analyze_predictions(models, AnalysisOptions(tolerance=1)))
    assert not strict.dependence.heterogeneous[3, 5]
    assert causes(strict)[("cat", "dog")] == (NOT_SIGNIFICANT, ["m0", "m1", "m2"])
    assert tolerant[("cat", "dog")] == (MORPHOLOGICAL, ["m0", "m1", "m2"])


def test_one_and_two_models() -> None:
    single = causes(analyze_predictions(planted_models(1)))
    assert single[("bird", "airplane")] == (MORPHOLOGICAL, ["m0"])
    assert single[("cat", "dog")] == (MORPHOLOGICAL, ["m0"])
    pair = causes(analyze_predictions(planted_models(2), AnalysisOptions(tolerance=1)))
    assert pair[("cat", "dog")] == (MORPHOLOGICAL, ["m0", "m1"])
    assert pair[("bird", "airplane")] == (NON_ESSENTIAL, ["m0"])
    assert [quorum(m, 1) for m in (1, 2, 3, 4, 6)] == [1, 2, 2, 3, 5]


def test_networks_similarity_and_consensus() -> None:
    analysis = analyze_predictions(planted_models(4))
    m2 = analysis.models["m2"].network
    assert set(m2.edges) == set(SHARED) | set(PARTICULAR["m2"])
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
    low, high = mean_interval(gains, seed=1)
    assert low < 0.04 < high and low > 0
    assert mean_interval(gains, seed=1) == (low, high) and mean_interval(np.zeros(5)) == (0.0, 0.0)


def test_model_without_errors_and_unpredicted_class() -> None:
    perfect_labels = np.repeat(np.arange(10), 50)
    logits = np.eye(10, dtype=np.float32)[perfect_labels] * 3
    perfect = make_predictions("perfect", logits, perfect_labels, np.arange(500), CLASSES)
    noisy = synthetic_predictions("noisy", SHARED, seed=5, per_class=50)
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
    analysis = analyze_predictions(planted_models(4))
    apply_erasure_check(analysis, {"m2": [("ship", "frog")], "m1": [("cat", "dog")]})
    found = causes(analysis)
    assert found[("ship", "frog")][0] == NON_ESSENTIAL
    assert found[("dog", "cat")][0] == NOT_SIGNIFICANT
    assert found[("bird", "airplane")][0] == NOT_SIGNIFICANT
    assert found[("cat", "dog")][0] == MORPHOLOGICAL
    record = next(r for r in analysis.pairs if (r["true"], r["pred"]) == ("dog", "cat"))
    assert record["pattern_cause"] == NON_ESSENTIAL and record["erasure_verified_models"] == []
