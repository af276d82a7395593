"""Model dependence on planted predictions: where a class's errors go, across architectures against across seeds;
the equivalence test; the power of the whole rule; bad groups and margins; how erasure corrects the errors of each
cause."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import statsmodels.api as sm

from miscause.cli import main
from miscause.errors import MiscauseError
from miscause.jobs.analysis.erasure.cause_interaction import Tally, cause_interaction
from miscause.jobs.analysis.erasure.summaries import Compared, Outcomes, PairSummary
from miscause.jobs.analysis.erasure.verification_power import verification_power
from miscause.jobs.analysis.inputs.predictions import make_predictions
from miscause.jobs.analysis.patterns.causes import MORPHOLOGICAL, NON_ESSENTIAL, UNDETERMINED
from miscause.jobs.analysis.patterns.dependence_power import called, rule_power, simulate_counts
from miscause.jobs.analysis.patterns.dependence_tests import architecture_test, equivalence_p
from miscause.jobs.analysis.patterns.misclassification import AnalysisOptions, analyze_predictions
from miscause.jobs.analysis.patterns.model_dependence import MODEL_DEPENDENT, NOT_TESTED, SHARED
from miscause.jobs.analysis.patterns.replicates import parse_replicates
from miscause.jobs.analysis.patterns.significance import mcnemar_greater, mcnemar_min_detectable

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PER_CLASS = 2000
MIN_COUNT = 60
ARCHITECTURES = {"arch_a": ("a0", "a1", "a2"), "arch_b": ("b0", "b1", "b2"), "arch_c": ("c0", "c1")}
# per class: (error rate per architecture, planted target, share of the class's errors it takes per seed):
# bird -> airplane: the share differs between architectures, alike between seeds;
# deer -> horse: arch_b errs on deer two and a half times as often as arch_a, the errors going to horse alike;
# cat -> dog: alike everywhere; ship -> frog: the share varies between seeds as much as anything, equal on average
PLAN = {
    "bird": ({"arch_a": 0.15, "arch_b": 0.15, "arch_c": 0.15}, "airplane",
             {"arch_a": (0.6, 0.6, 0.6), "arch_b": (0.1, 0.1, 0.1), "arch_c": (0.1, 0.1)}),
    "deer": ({"arch_a": 0.1, "arch_b": 0.25, "arch_c": 0.15}, "horse",
             {"arch_a": (0.5, 0.5, 0.5), "arch_b": (0.5, 0.5, 0.5), "arch_c": (0.5, 0.5)}),
    "cat": ({"arch_a": 0.25, "arch_b": 0.25, "arch_c": 0.25}, "dog",
            {"arch_a": (0.5, 0.5, 0.5), "arch_b": (0.5, 0.5, 0.5), "arch_c": (0.5, 0.5)}),
    "ship": ({"arch_a": 0.2, "arch_b": 0.2, "arch_c": 0.2}, "frog",
             {"arch_a": (0.2, 0.6, 0.4), "arch_b": (0.6, 0.2, 0.4), "arch_c": (0.2, 0.6)}),
}
BASE_ERROR = 0.05


def planted(name: str, arch: str, seed_index: int, seed: int, classes: tuple[str, ...] = CLASSES):
    """PER_CLASS images per class; a class errs at its planted rate (else BASE_ERROR), its planted target takes
    the planted share of its errors and the other errors spread uniformly over the remaining classes."""
    rng = np.random.default_rng(seed)
    k = len(classes)
    labels = np.repeat(np.arange(k), PER_CLASS)
    predicted = labels.copy()
    for i, cls in enumerate(classes):
        rate, target, shares = PLAN.get(cls, ({arch: BASE_ERROR}, None, None))
        rows = np.flatnonzero(labels == i)
        wrong = rows[rng.random(len(rows)) < rate[arch]]
        others = [j for j in range(k) if j != i]
        probs = np.full(k - 1, 1 / (k - 1))
        if target in classes:
            share = shares[arch][seed_index]
            probs = np.full(k - 1, (1 - share) / (k - 2))
            probs[others.index(classes.index(target))] = share
        predicted[wrong] = rng.choice(others, size=len(wrong), p=probs)
    logits = rng.normal(0, 0.1, (len(labels), k)).astype(np.float32)
    logits[np.arange(len(labels)), predicted] += 5
    return make_predictions(name, logits, labels, np.arange(len(labels)), classes)


def zoo() -> list:
    models = []
    for arch, names in ARCHITECTURES.items():
        for s, name in enumerate(names):
            models.append(planted(name, arch, s, seed=len(models)))
    return models


def options(**extra) -> AnalysisOptions:
    return AnalysisOptions(replicates=tuple(ARCHITECTURES.items()), min_count=MIN_COUNT, **extra)


@pytest.fixture(scope="module")
def analysis():
    return analyze_predictions(zoo(), options())


def test_the_family_is_fixed_before_testing(analysis) -> None:
    d = analysis.dependence
    assert d.tested and d.family_size == 4 and d.level == pytest.approx(0.05 / 4)
    in_family = {(r.true, r.pred) for r in analysis.pairs if r.dependence.in_family}
    assert in_family == {("bird", "airplane"), ("deer", "horse"), ("cat", "dog"), ("ship", "frog")}
    outside = analysis.pair("bird", "truck").dependence
    assert outside.outcome == NOT_TESTED and outside.p_value is None
    assert analysis.quorum == 2 and sum(d.outcomes.values()) == 4


def test_a_share_that_differs_between_architectures_not_seeds_is_found(analysis) -> None:
    bird = analysis.pair("bird", "airplane")
    d = bird.dependence
    assert d.outcome == MODEL_DEPENDENT and d.p_adjusted <= 0.05 and d.df_within == 5 and d.df_between == 2
    assert bird.cause == NON_ESSENTIAL and set(bird.models) == {"a0", "a1", "a2"} and bird.architectures == ["arch_a"]
    assert d.effect.high == "arch_a" and d.effect.low in ("arch_b", "arch_c")
    assert 0 < d.effect.ci95[0] <= d.effect.difference <= d.effect.ci95[1]
    assert 0 < d.effect.ci95_images[0] <= d.effect.difference <= d.effect.ci95_images[1]
    assert abs(d.effect.difference - 0.5) < 0.06
    assert d.min_detectable is not None and d.min_detectable < d.effect.difference


def test_more_errors_in_the_same_pattern_is_not_dependence(analysis) -> None:
    deer = analysis.pair("deer", "horse")
    rates = {name: edge.count / PER_CLASS for name, edge in deer.per_model.items()}
    assert rates["b0"] > 2 * rates["a0"]  # P(horse | deer) differs; the share of deer's errors does not
    assert deer.dependence.outcome == SHARED and deer.cause == MORPHOLOGICAL
    assert deer.architectures == ["arch_a", "arch_b", "arch_c"]


def test_an_equivalent_pair_is_shared_and_seed_noise_undetermined(analysis) -> None:
    cat = analysis.pair("cat", "dog")
    assert cat.dependence.outcome == SHARED and cat.dependence.equivalence_adjusted <= 0.05
    assert cat.cause == MORPHOLOGICAL and len(cat.models) == 8
    ship = analysis.pair("ship", "frog").dependence
    assert ship.outcome not in (MODEL_DEPENDENT, SHARED) and ship.p_adjusted > 0.05
    assert ship.dispersion > 5 and ship.equivalence_adjusted > 0.05
    # the interval with seed-to-seed variation is wider than the one over images with the seeds fixed
    assert ship.effect.ci95[1] - ship.effect.ci95[0] > 3 * (ship.effect.ci95_images[1] - ship.effect.ci95_images[0])
    assert analysis.pair("ship", "frog").cause == UNDETERMINED
    assert ship.min_detectable is None or ship.min_detectable > cat.dependence.min_detectable


def test_the_test_is_a_quasi_binomial_glm_and_survives_zero_seed_variance() -> None:
    n = np.array([30.0, 42.0, 25.0, 61.0, 70.0, 52.0, 40.0])
    e = np.array([200.0, 210.0, 190.0, 220.0, 205.0, 215.0, 180.0])
    arch = np.array([0, 0, 0, 1, 1, 1, 2])  # the third architecture is unreplicated
    test = architecture_test(n, e, arch)
    dummies = np.eye(3)[arch]
    full = sm.GLM(np.column_stack([n, e - n]), dummies, family=sm.families.Binomial()).fit(scale="X2")
    null = sm.GLM(np.column_stack([n, e - n]), np.ones((7, 1)), family=sm.families.Binomial()).fit()
    assert (test.df_between, test.df_within) == (2, 4)
    assert test.dispersion == pytest.approx(max(full.pearson_chi2 / 4, 1.0))
    assert test.f == pytest.approx((null.deviance - full.deviance) / 2 / test.dispersion)
    # seeds that agree exactly: the dispersion is floored at 1, so two images' difference is no discovery
    same = architecture_test(np.array([10.0, 10.0, 12.0, 12.0]), np.full(4, 100.0), np.array([0, 0, 1, 1]))
    assert same.dispersion == 1.0 and 0.3 < same.p_value < 1
    # equal shares in two architectures with many errors are shown equivalent, with few they are not
    many = equivalence_p(np.array([500.0, 1000.0]), np.array([1000.0, 2000.0]), np.asarray(1.0), 0.1)
    few = equivalence_p(np.array([5.0, 10.0]), np.array([10.0, 20.0]), np.asarray(1.0), 0.1)
    assert many < 1e-6 and few > 0.2
    assert equivalence_p(np.array([500.0, 0.0]), np.array([1000.0, 0.0]), np.asarray(1.0), 0.1) == 1.0


def test_power_of_the_rule_grows_with_errors_and_shrinks_with_dispersion() -> None:
    arch = np.array([0, 0, 0, 1, 1, 1])
    seed = np.random.SeedSequence(0)
    small, large = (rule_power(np.full(6, n), arch, 2, 0.3, 1.0, 0.01, 0.1, seed) for n in (50.0, 500.0))
    noisy = rule_power(np.full(6, 500.0), arch, 2, 0.3, 8.0, 0.01, 0.1, seed)
    assert large.min_detectable < small.min_detectable
    assert noisy.min_detectable is None or noisy.min_detectable > large.min_detectable
    assert large.shared_power > small.shared_power
    assert rule_power(np.full(6, 500.0), arch, 2, 0.3, 1.0, 0.01, 0.1, seed) == large


def test_seed_noise_alone_is_rarely_called_dependent() -> None:
    # 1000 simulated pairs, three architectures of three seeds with equal shares and seeds three times as variable
    # as binomial sampling: the rule at level 0.05 calls few of them model-dependent
    e = np.array([300.0, 320.0, 280.0, 200.0, 210.0, 190.0, 400.0, 380.0, 420.0])
    arch = np.repeat(np.arange(3), 3)
    counts = simulate_counts(e, np.full((1, 9), 0.3), 3.0, np.random.SeedSequence(1))
    dependent, shared = called(counts, e, arch, 3, 0.05, 0.1)
    assert dependent.mean() <= 0.07
    assert architecture_test(counts, e, arch).dispersion.mean() > 2


def test_without_replicates_nothing_is_tested() -> None:
    models = zoo()[:4]
    analysis = analyze_predictions(models, AnalysisOptions(min_count=MIN_COUNT))
    assert not analysis.dependence.tested and "no replicate groups" in analysis.dependence.reason
    bird = analysis.pair("bird", "airplane")
    assert bird.dependence.outcome == NOT_TESTED and bird.cause == UNDETERMINED
    assert bird.dependence.effect.ci95 is None and bird.dependence.effect.ci95_images is not None
    assert bird.dependence.p_value is None
    assert {r.cause for r in analysis.pairs} <= {UNDETERMINED, "not_significant"}


def test_one_edge_against_a_missing_edge_is_no_difference() -> None:
    # the review's case: truck -> automobile in 7 of 11 errors of one model and 6 of 13 of another; one edge
    # significant and the other not says nothing about a difference between the models
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 200)
    first, second = labels.copy(), labels.copy()
    trucks = np.flatnonzero(labels == 9)
    first[trucks[:7]], second[trucks[3:9]] = 1, 1
    first[trucks[7:11]] = rng.integers(2, 9, 4)
    second[trucks[9:16]] = rng.integers(2, 9, 7)
    models = [make_predictions(name, np.eye(10, dtype=np.float32)[p] * 5, labels, np.arange(2000), CLASSES)
              for name, p in (("one", first), ("two", second))]
    record = analyze_predictions(models, AnalysisOptions(min_count=5)).pair("truck", "automobile")
    assert record.per_model["one"].count == 7 and record.per_model["two"].count == 6
    assert record.cause == UNDETERMINED


def test_replicate_groups_and_margin_checked() -> None:
    assert parse_replicates(["a=x,y", "b=z, w"]) == {"a": ("x", "y"), "b": ("z", "w")}
    for specs, message in ((["a=x"], "at least two different models"), (["a"], "expected NAME=MODEL"),
                           (["a=x,y", "b=y,z"], "is in groups 'a' and 'b'"), (["a=x,y", "a=z,w"], "given twice")):
        with pytest.raises(MiscauseError, match=message):
            parse_replicates(specs)
    models = zoo()[:4]
    with pytest.raises(MiscauseError, match="unknown model"):
        analyze_predictions(models, AnalysisOptions(replicates=(("arch_a", ("a0", "zz")), ("b", ("b0", "a2")))))
    with pytest.raises(MiscauseError, match="at least two replicated architectures"):
        analyze_predictions(models, AnalysisOptions(replicates=(("arch_a", ("a0", "a1", "a2")),)))
    for margin in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(MiscauseError, match="--margin must lie in"):
            AnalysisOptions(margin=margin).check()


def write(path: Path, predictions) -> str:
    np.savez(path, logits=predictions.logits, labels=predictions.labels, indices=predictions.indices,
             classes=np.asarray(predictions.classes), name=predictions.name)
    return str(path)


def test_cli_dependence_report_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    files = [write(tmp_path / f"{p.name}.npz", p) for p in zoo()]
    out = tmp_path / "out"
    groups = [word for arch, names in ARCHITECTURES.items() for word in ("--replicates", f"{arch}={','.join(names)}")]
    assert main(["analyze", "--predictions", *files, "--out", str(out), *groups, "--min-count", str(MIN_COUNT),
                 "--margin", "0.1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    settings = metrics["settings"]
    assert settings["replicates"] == {k: list(v) for k, v in ARCHITECTURES.items()} and settings["margin"] == 0.1
    dependence = settings["model_dependence"]
    assert dependence["tested"] and dependence["family_size"] == 4
    assert dependence["outcomes"] == {"model_dependent": 1, "shared": 2, "undetermined": 1, "not_tested": 0}
    bird = next(p for p in metrics["pairs"] if (p["true"], p["pred"]) == ("bird", "airplane"))
    assert bird["dependence"]["outcome"] == "model_dependent" and len(bird["dependence"]["effect"]["ci95"]) == 2
    assert bird["per_model"]["a0"]["errors"] > bird["per_model"]["a0"]["count"] > 0
    report = (out / "report.md").read_text()
    assert "--replicates arch_a=a0,a1,a2 --replicates arch_b" in report and "--margin 0.1" in report
    assert "seed-to-seed" in report and "1 model-dependent, 2 shared" in report
    other = planted("b2", "arch_b", 2, seed=9, classes=CLASSES[:9] + ("lorry",))
    (tmp_path / "odd").mkdir()
    bad = {"unknown": (["--replicates", "arch_a=a0,nobody", "--replicates", "arch_b=b0,b1"], "unknown model(s) nobody"),
           "one": (["--replicates", "arch_a=a0"], "at least two different models"),
           "single": (["--replicates", "arch_a=a0,a1"], "at least two replicated architectures"),
           "margin": (["--margin", "1.2"], "--margin must lie in (0, 1)"),
           "zero margin": (["--margin", "0"], "--margin must lie in (0, 1)"),
           "classes": (["--replicates", "arch_b=b0,b2", "--replicates", "arch_a=a0,a1"],
                       "replicates must share the class list")}
    for name, (extra, message) in bad.items():
        given = files[:4] + [write(tmp_path / "odd" / "b2.npz", other)] if name == "classes" else files
        capsys.readouterr()
        target = tmp_path / f"bad-{name}"
        assert main(["analyze", "--predictions", *given, "--out", str(target), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
        assert not target.exists()


def erasure_pair(true: str, pred: str, errors: int, corrected: int, random: int = 0,
                 candidate: bool = False) -> PairSummary:
    """One pair of an erasure summary, as `erasure.pair_summaries` makes it, with what these tests read."""

    def outcomes(fixed: int) -> Outcomes:
        return Outcomes(errors=errors, corrected=fixed, third_class=0, unchanged=errors - fixed,
                        corrected_rate=fixed / errors, correct=0, broken=0, broken_rate=0.0)

    return PairSummary(true=true, pred=pred, errors=errors,
                       compared=Compared(outcomes={"saliency": outcomes(corrected), "random": outcomes(random)},
                                         tests={}),
                       runner_up_true=0, saliency_to_runner_up=0, candidate=candidate)


def test_erasure_corrects_non_essential_errors_more_often(analysis) -> None:
    morphological = [erasure_pair("cat", "dog", 200, 20, 10), erasure_pair("deer", "horse", 100, 10, 5)]
    summaries = {"a0": SimpleNamespace(pairs=[erasure_pair("bird", "airplane", 150, 60, 12), *morphological,
                                              erasure_pair("bird", "truck", 9, 9)]),
                 "b0": SimpleNamespace(pairs=[erasure_pair("bird", "airplane", 6, 6), *morphological]),
                 "c0": SimpleNamespace(pairs=morphological)}
    result = cause_interaction(analysis, summaries)
    a0 = result["a0"]
    assert a0.causes[NON_ESSENTIAL] == Tally(pairs=1, errors=150, corrected=60, rate=0.4, random_corrected=12,
                                             random_rate=0.08)
    assert a0.causes[MORPHOLOGICAL].errors == 300 and a0.causes[MORPHOLOGICAL].rate == pytest.approx(0.1)
    assert a0.test.significant and a0.test.p_adjusted < 1e-6
    assert [(p.true, p.pred, p.significant) for p in a0.pairs] == [("bird", "airplane", True)]
    # bird -> airplane is not significant in b0, so its errors there belong to no cause; bird -> truck to none
    b0 = result["b0"].causes[NON_ESSENTIAL]
    assert b0.errors == 0 and b0.rate is None
    assert result["b0"].test.p_value == 1.0 and not result["c0"].test.significant


def test_verification_power() -> None:
    # at level 0.01 seven errors corrected by saliency erasure alone are the fewest that can be significant
    assert mcnemar_min_detectable(100, 0.01)[0] == 7
    assert mcnemar_greater(7, 0) <= 0.01 < mcnemar_greater(6, 0)
    assert mcnemar_min_detectable(6, 0.01) == (7, None)
    rates = [mcnemar_min_detectable(n, 0.01)[1] for n in (7, 10, 24, 100)]
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False)) and rates[0] > 0.9
    summaries = {"m": SimpleNamespace(pairs=[erasure_pair("cat", "dog", 24, 11, 6, candidate=True),
                                             erasure_pair("ship", "airplane", 6, 0, 0, candidate=True),
                                             erasure_pair("dog", "bird", 3, 1, 0)])}
    rows = verification_power(summaries, 0.05, "holm")["m"]
    assert [(r.true, r.level, r.needed) for r in rows] == [("cat", 0.025, 6), ("ship", 0.025, 6)]
    assert rows[0].min_detectable_rate == pytest.approx(mcnemar_min_detectable(24, 0.025)[1])
    assert rows[1].min_detectable_rate is not None
    assert verification_power(summaries, 0.05, "none")["m"][0].needed == 5
