"""Model dependence on planted predictions: across architectures against across seeds, power, bad groups, and
how erasure corrects the errors of each cause."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from miscause.cli import main
from miscause.errors import MiscauseError
from miscause.jobs.analysis.erasure.cause_interaction import cause_interaction
from miscause.jobs.analysis.erasure.verification_power import verification_power
from miscause.jobs.analysis.inputs.predictions import make_predictions
from miscause.jobs.analysis.patterns.causes import MORPHOLOGICAL, NON_ESSENTIAL
from miscause.jobs.analysis.patterns.misclassification import AnalysisOptions, analyze_predictions
from miscause.jobs.analysis.patterns.replicates import parse_replicates
from miscause.jobs.analysis.patterns.significance import (
    between_within_f,
    cochran_q,
    mcnemar_greater,
    mcnemar_min_detectable,
    min_detectable_difference,
)

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PER_CLASS = 2000
# bird -> airplane depends on the architecture (arch_a makes it, the others rarely); ship -> frog varies as much
# between seeds of one architecture as between architectures (the architecture means are equal); cat -> dog is
# made alike by every model
ARCHITECTURES = {"arch_a": ("a0", "a1", "a2"), "arch_b": ("b0", "b1", "b2"), "arch_c": ("c0", "c1", "c2")}
ARCH_RATE = {"arch_a": 0.08, "arch_b": 0.0, "arch_c": 0.0}
SEED_RATES = {"arch_a": (0.02, 0.10, 0.06), "arch_b": (0.10, 0.02, 0.06), "arch_c": (0.06, 0.10, 0.02)}


def planted(name: str, rates: dict[tuple[str, str], float], seed: int, classes: tuple[str, ...] = CLASSES):
    """Predictions of PER_CLASS images per class: image of class t predicted as p at `rates[t, p]`; otherwise
    5% of images err uniformly over the other classes."""
    rng = np.random.default_rng(seed)
    k = len(classes)
    labels = np.repeat(np.arange(k), PER_CLASS)
    predicted = labels.copy()
    noise = rng.random(len(labels)) < 0.05
    predicted[noise] = (labels[noise] + rng.integers(1, k, noise.sum())) % k
    u = rng.random(len(labels))
    for (t, p), rate in rates.items():
        members = (labels == classes.index(t)) & (u < rate)
        predicted[members] = classes.index(p)
    logits = rng.normal(0, 0.1, (len(labels), k)).astype(np.float32)
    logits[np.arange(len(labels)), predicted] += 5
    return make_predictions(name, logits, labels, np.arange(len(labels)), classes)


def zoo() -> list:
    models = []
    for arch, names in ARCHITECTURES.items():
        for s, name in enumerate(names):
            rates = {("bird", "airplane"): ARCH_RATE[arch], ("ship", "frog"): SEED_RATES[arch][s],
                     ("cat", "dog"): 0.10}
            models.append(planted(name, rates, seed=len(models)))
    return models


def groups_option() -> tuple:
    return tuple(ARCHITECTURES.items())


def pair(analysis, true: str, pred: str) -> dict:
    return next(r for r in analysis.pairs if (r["true"], r["pred"]) == (true, pred))


def test_architecture_dependence_beyond_seed_noise() -> None:
    calibrated = analyze_predictions(zoo(), AnalysisOptions(replicates=groups_option()))
    assert calibrated.dependence.calibrated and calibrated.dependence.df_within == 6
    bird = pair(calibrated, "bird", "airplane")
    assert bird["dependence"]["heterogeneous"] and bird["dependence"]["f_adjusted"] <= 0.05
    assert bird["cause"] == NON_ESSENTIAL and set(bird["models"]) == {"a0", "a1", "a2"}
    ship = pair(calibrated, "ship", "frog")
    assert ship["dependence"]["q_adjusted"] <= 0.05 < ship["dependence"]["f_adjusted"]
    assert not ship["dependence"]["heterogeneous"] and ship["cause"] == MORPHOLOGICAL
    cat = pair(calibrated, "cat", "dog")
    assert not cat["dependence"]["heterogeneous"] and cat["cause"] == MORPHOLOGICAL
    assert len(cat["models"]) == 9


def test_without_replicates_seed_noise_looks_model_dependent() -> None:
    uncalibrated = analyze_predictions(zoo())
    assert not uncalibrated.dependence.calibrated
    ship = pair(uncalibrated, "ship", "frog")
    assert ship["dependence"]["heterogeneous"] and ship["dependence"]["f"] is None
    assert ship["cause"] == NON_ESSENTIAL
    assert pair(uncalibrated, "cat", "dog")["cause"] == MORPHOLOGICAL


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
    analysis = analyze_predictions(models, AnalysisOptions(min_count=5))
    record = pair(analysis, "truck", "automobile")
    assert record["per_model"]["one"]["count"] == 7 and record["per_model"]["two"]["count"] == 6
    assert record["dependence"]["q_p"] > 0.5 and not record["dependence"]["heterogeneous"]
    assert record["cause"] != NON_ESSENTIAL
    assert record["dependence"]["min_detectable"]["images"] > 6


def test_cochran_q_and_f() -> None:
    # two samples: Q is McNemar's statistic (b - c)^2 / (b + c); here b = 8 subjects only in the first, c = 2
    q, p = cochran_q(np.array([10.0, 4.0]), row_square_sum=2 * 2 ** 2 + 8 + 2)
    assert q == pytest.approx((8 - 2) ** 2 / 10) and 0 < p < 0.1
    assert cochran_q(np.array([5.0, 5.0, 5.0]), row_square_sum=5 * 9) == (0.0, 1.0)
    f, p, df_b, df_w = between_within_f(np.array([1.0, 1.2, 3.0, 3.2, 2.0]), np.array(["a", "a", "b", "b", "c"]))
    assert (df_b, df_w) == (2, 2) and f > 50 and p < 0.02
    assert np.isnan(between_within_f(np.array([1.0, 2.0]), np.array(["a", "b"]))[0])


def test_power_is_monotone_in_counts_and_level() -> None:
    sizes = [50, 200, 1000, 5000]
    mdd = [min_detectable_difference(n, 0.05, 0.05 / 90) for n in sizes]
    assert all(a > b for a, b in zip(mdd, mdd[1:], strict=False))
    assert min_detectable_difference(1000, 0.05, 0.05) < min_detectable_difference(1000, 0.05, 0.001)
    assert min_detectable_difference(1000, 0.01, 0.05) < min_detectable_difference(1000, 0.2, 0.05)
    assert min_detectable_difference(2, 0.5, 1e-6) is None
    # the textbook example: 80% power at two-sided 5% for 0.05 against 0.10 needs ~ 435 per group
    assert min_detectable_difference(435, 0.05, 0.05) == pytest.approx(0.05, abs=0.002)
    analysis = analyze_predictions(zoo())
    record = pair(analysis, "cat", "dog")["dependence"]["min_detectable"]
    assert record["images"] == pytest.approx(record["rate"] * PER_CLASS)
    assert analysis.dependence.mdd_level == pytest.approx(0.05 / 90)


def test_replicate_groups_checked() -> None:
    assert parse_replicates(["a=x,y", "b=z, w"]) == {"a": ("x", "y"), "b": ("z", "w")}
    for specs, message in ((["a=x"], "at least two different models"), (["a"], "expected NAME=MODEL"),
                           (["a=x,y", "b=y,z"], "is in groups 'a' and 'b'"), (["a=x,y", "a=z,w"], "given twice")):
        with pytest.raises(MiscauseError, match=message):
            parse_replicates(specs)
    models = zoo()[:4]
    with pytest.raises(MiscauseError, match="unknown model"):
        analyze_predictions(models, AnalysisOptions(replicates=(("arch_a", ("a0", "zz")),)))
    with pytest.raises(MiscauseError, match="no second architecture"):
        analyze_predictions(models[:3], AnalysisOptions(replicates=(("arch_a", ("a0", "a1", "a2")),)))


def write(path: Path, predictions) -> str:
    np.savez(path, logits=predictions.logits, labels=predictions.labels, indices=predictions.indices,
             classes=np.asarray(predictions.classes), name=predictions.name)
    return str(path)


def test_cli_replicates_and_bad_groups(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    files = [write(tmp_path / f"{p.name}.npz", p) for p in zoo()]
    out = tmp_path / "out"
    groups = [word for arch, names in ARCHITECTURES.items() for word in ("--replicates", f"{arch}={','.join(names)}")]
    assert main(["analyze", "--predictions", *files, "--out", str(out), *groups]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["replicates"] == {k: list(v) for k, v in ARCHITECTURES.items()}
    report = (out / "report.md").read_text()
    assert "--replicates arch_a=a0,a1,a2 --replicates arch_b" in report
    assert "seed-to-seed" in report and "smallest difference" in report
    other = planted("b2", {}, seed=9, classes=CLASSES[:9] + ("lorry",))
    bad = {"unknown": (["--replicates", "arch_a=a0,nobody"], "unknown model(s) nobody"),
           "one": (["--replicates", "arch_a=a0"], "at least two different models"),
           "classes": (["--replicates", "arch_b=b0,b2"], "replicates must share the class list")}
    for name, (extra, message) in bad.items():
        given = files[:4] + [write(tmp_path / "odd" / "b2.npz", other)] if name == "classes" else files
        (tmp_path / "odd").mkdir(exist_ok=True)
        capsys.readouterr()
        target = tmp_path / f"bad-{name}"
        assert main(["analyze", "--predictions", *given, "--out", str(target), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
        assert not target.exists()


def erasure_pair(true: str, pred: str, errors: int, corrected: int, random: int = 0) -> dict:
    """One pair's entry of an erasure summary, as `erasure.pair_summaries` writes it."""
    return {"true": true, "pred": pred, "errors": errors, "saliency": {"corrected": corrected},
            "random": {"corrected": random}}


def test_erasure_corrects_non_essential_errors_more_often() -> None:
    analysis = analyze_predictions(zoo(), AnalysisOptions(replicates=groups_option()))
    morphological = [erasure_pair("cat", "dog", 200, 20, 10), erasure_pair("ship", "frog", 100, 10, 5)]
    summaries = {"a0": {"pairs": [erasure_pair("bird", "airplane", 150, 60, 12), *morphological,
                                  erasure_pair("bird", "truck", 9, 9)]},
                 "b0": {"pairs": [erasure_pair("bird", "airplane", 6, 6), *morphological]},
                 "c0": {"pairs": morphological}}
    result = cause_interaction(analysis, summaries)
    a0 = result["a0"]
    assert a0["causes"][NON_ESSENTIAL] == {"pairs": 1, "errors": 150, "corrected": 60, "rate": 0.4,
                                           "random_corrected": 12, "random_rate": 0.08}
    assert a0["causes"][MORPHOLOGICAL]["errors"] == 300 and a0["causes"][MORPHOLOGICAL]["rate"] == pytest.approx(0.1)
    assert a0["test"]["significant"] and a0["test"]["p_adjusted"] < 1e-6
    assert [(p["true"], p["pred"], p["significant"]) for p in a0["pairs"]] == [("bird", "airplane", True)]
    # bird -> airplane is not significant in b0, so its errors there belong to no cause; bird -> truck to none
    b0 = result["b0"]["causes"][NON_ESSENTIAL]
    assert b0["errors"] == 0 and b0["rate"] is None
    assert result["b0"]["test"]["p_value"] == 1.0 and not result["c0"]["test"]["significant"]


def test_verification_power() -> None:
    # at level 0.01 seven errors corrected by saliency erasure alone are the fewest that can be significant
    assert mcnemar_min_detectable(100, 0.01)[0] == 7
    assert mcnemar_greater(7, 0) <= 0.01 < mcnemar_greater(6, 0)
    assert mcnemar_min_detectable(6, 0.01) == (7, None)
    rates = [mcnemar_min_detectable(n, 0.01)[1] for n in (7, 10, 24, 100)]
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False)) and rates[0] > 0.9
    summaries = {"m": {"pairs": [{**erasure_pair("cat", "dog", 24, 11, 6), "candidate": True},
                                 {**erasure_pair("ship", "airplane", 6, 0, 0), "candidate": True},
                                 {**erasure_pair("dog", "bird", 3, 1, 0), "candidate": False}]}}
    rows = verification_power(summaries, 0.05, "holm")["m"]
    assert [(r["true"], r["level"], r["needed"]) for r in rows] == [("cat", 0.025, 6), ("ship", 0.025, 6)]
    assert rows[0]["min_detectable_rate"] == pytest.approx(mcnemar_min_detectable(24, 0.025)[1])
    assert rows[1]["min_detectable_rate"] is not None
    assert verification_power(summaries, 0.05, "none")["m"][0]["needed"] == 5
