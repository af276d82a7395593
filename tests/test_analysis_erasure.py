"""The erasure study and the correction policy: end to end on a tiny model repository, and on planted outcomes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from miscause.cli import main
from miscause.jobs.analysis.erasure import policy_selection
from miscause.jobs.analysis.erasure.examples import round_robin
from miscause.jobs.analysis.erasure.policy_fit import apply_rules, evaluate_policy, policy_document, setting_rules
from miscause.jobs.analysis.erasure.run import SplitRun
from miscause.jobs.analysis.erasure.summaries import summarize
from miscause.jobs.analysis.patterns.causes import CAUSES
from miscause.jobs.training.zoo import FlipTTA
from miscause.kernels import anchor_count

CLASSES = ("cat", "dog", "ship")
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class Tiny(nn.Module):
    """A small random CNN: enough structure for gradients and erasure to change its answers."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8 * 16 * 16, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def write_model(repository: Path, name: str, seed: int, tta: str, grad_cam_layer: str | None = None) -> nn.Module:
    """A model folder as `miscause export` lays it out (config.json, 1/model.pt2, test-time augmentation
    inside the program); returns the network as served."""
    torch.manual_seed(seed)
    model = (FlipTTA(Tiny()) if tta == "flip" else Tiny()).eval()
    folder = repository / name
    (folder / "1").mkdir(parents=True)
    program = torch.export.export(model, (torch.randn(2, 3, 32, 32),),
                                  dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    torch.export.save(program, str(folder / "1" / "model.pt2"))
    config = {"name": name, "architecture": "tiny", "classes": list(CLASSES), "tta": tta,
              "input": {"shape": [3, 32, 32], "dtype": "float32", "layout": "NCHW"},
              "normalization": {"mean": list(MEAN), "std": list(STD)}, "versions": {"torch": torch.__version__},
              "training": {"split": "trainval" if tta == "flip" else "train"}}
    if grad_cam_layer:
        config["grad_cam_layer"] = grad_cam_layer
    (folder / "config.json").write_text(json.dumps(config))
    return model


def write_images(root: Path, per_class: dict[str, int], seed: int) -> None:
    """An ImageFolder tree of 32x32 PNGs: each class a different colour cast plus noise."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3))
                pixels[..., c] = np.clip(pixels[..., c] + 80, 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i:03d}.png")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("erasure")
    write_images(root / "data", {"train": 20, "test": 10}, seed=0)
    models = {"tiny_a": write_model(root / "repo", "tiny_a", 0, "none"),
              "tiny_b": write_model(root / "repo", "tiny_b", 1, "flip")}
    return {"root": root, "data": root / "data", "repo": root / "repo", "models": models}


def eager_accuracy(model: nn.Module, data: Path) -> float:
    """Accuracy computed here, independently of the analysis, from the PNGs."""
    images, labels = [], []
    for c, name in enumerate(CLASSES):
        for path in sorted((data / "test" / name).glob("*.png")):
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(c)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model(x)
    return float((logits.argmax(1).numpy() == np.array(labels)).mean())


def test_erasure_study_end_to_end(workspace: dict) -> None:
    out = workspace["root"] / "report"
    status = main(["analyze", "--repository", str(workspace["repo"]), "--data", str(workspace["data"]),
                   "--erasure", "--out", str(out), "--batch-size", "16", "--examples", "4", "--sweep-methods",
                   "gradient", "--control-draws", "3", "--policy-min-gain", "1", "--min-count", "2", "--device",
                   "cpu", "--no-progress"])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"tiny_a", "tiny_b"}
    for name in ("tiny_a", "tiny_b"):
        model = metrics["models"][name]
        assert model["n"] == 30
        assert model["accuracy"] == pytest.approx(eager_accuracy(workspace["models"][name], workspace["data"]))
        assert model["errors"] == round(30 * (1 - model["accuracy"]))
        study = metrics["erasure"][name]
        assert len(study["settings"]) == 15
        for setting in study["settings"]:
            for anchors in ("saliency", "random"):
                o = setting[anchors]
                assert o["corrected"] + o["third_class"] + o["unchanged"] == o["errors"] == model["errors"]
                assert 0 <= o["broken"] <= o["correct"] == 30 - model["errors"]
                anchors = anchor_count(setting["top_percent"], 32 * 32)
                assert anchors <= o["mean_erased_pixels"] <= min(anchors * setting["box"] ** 2, 32 * 32)
        assert sum(p["errors"] for p in study["pairs"]) == model["errors"]
        policy = json.loads((workspace["repo"] / name / "policy.json").read_text())
        assert policy["version"] == 1 and policy["model"] == name
        assert policy["saliency_method"] == "gradient" and policy["fill"] == [0.0, 0.0, 0.0]
        assert (policy["top_percent"], policy["box"]) in {(float(p), b) for p in (1, 2, 5, 10, 20) for b in (1, 3, 5)}
        assert all(r["pred"] in CLASSES and 0 < r["max_confidence"] <= 1 for r in policy["rules"])
        test = policy["test"]
        assert test["n"] == 30 and test["accuracy_before"] == pytest.approx(model["accuracy"])
        assert test["net_change"] == pytest.approx((test["corrected"] - test["broken"]) / 30)
        assert test["ci95"][0] <= test["net_change"] <= test["ci95"][1]
        assert 0 <= test["accuracy_blanket"] <= 1 and test["method"] == policy["fitted_on"]["method"]
    # tiny_a trained on `train`: fitted on the validation split; tiny_b on `trainval`: cross-fitted on the test split
    a, b = (json.loads((workspace["repo"] / name / "policy.json").read_text()) for name in ("tiny_a", "tiny_b"))
    assert a["fitted_on"]["split"] == "val" and a["fitted_on"]["n"] == 6 and "folds" not in a["test"]
    assert b["fitted_on"]["split"] == "test" and b["fitted_on"]["method"] == "cross-fit" and b["fitted_on"]["n"] == 30
    folds = b["selection"]["expected"]["folds"]
    assert [f["n"] for f in folds] == [6] * 5 and all(f["fitted_n"] == 24 for f in folds)
    for policy in (a, b):  # rules reach the service only where the expected gain's interval lies above zero
        selection = policy["selection"]
        assert selection["applied"] == (selection["expected"]["ci95"][0] > 0 and bool(selection["chosen"]["rules"]))
        assert selection["applied"] or policy["rules"] == []
    assert any(w.startswith("tiny_b: its config says it was trained on the 'trainval' split") and "cross-fitted" in w
               for w in metrics["warnings"])
    assert {p["cause"] for p in metrics["pairs"]} <= set(CAUSES)
    assert len(metrics["pairs"]) == 6
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {"erasure-tiny_a.png", "examples-tiny_b.png", "network-consensus.png", "similarity.png"} <= figures
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(figures) and 'src="figures/' not in html
    markdown = (out / "report.md").read_text()
    assert "## Erasure study" in markdown and "## Correction policy" in markdown and "--erasure" in markdown
    assert "## Erasure by cause" in markdown and "## Deviations from the paper" in markdown
    assert "with every image erased" in markdown and "not calibrated by seed replicates" in markdown
    assert "expected gain (nested cross-validation on the val split)" in markdown
    assert "realised gain on the test split" in markdown
    assert set(metrics["cause_interaction"]) == {"tiny_a", "tiny_b"}
    for name in ("tiny_a", "tiny_b"):
        endpoint = metrics["endpoints"][name]
        assert endpoint["primary"]["control"] == "matched" and endpoint["primary"]["draws"] == 3
        assert endpoint["primary"]["correction"]["images"] == metrics["models"][name]["errors"]
        assert endpoint["verdict"] in ("supported", "absent", "undetermined")
        assert [s["control"] for s in endpoint["secondary"]] == ["shifted", "random"]
        assert len(endpoint["sweep"]) == 15 + 3  # every setting, then the three further fills
    assert markdown.index("## Primary endpoint") < markdown.index("## Data and models")
    assert "sweep-tiny_a.png" in figures and any("fewer than the 10" in w for w in metrics["warnings"])


def test_repository_without_erasure_and_no_policy(workspace: dict) -> None:
    out = workspace["root"] / "plain"
    status = main(["analyze", "--repository", str(workspace["repo"]), "--models", "tiny_a", "--data",
                   str(workspace["data"]), "--out", str(out), "--device", "cpu"])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["models"]) == ["tiny_a"] and metrics["erasure"] is None


def test_grad_cam_erasure_study_and_a_model_without_its_layer(workspace: dict, capsys) -> None:
    """grad_cam runs on the layer config.json names (inside the flip augmentation); a model whose config names
    none and whose architecture has none is one error line, and nothing is written."""
    repo = workspace["root"] / "layered"
    write_model(repo, "tiny_cam", 2, "flip", grad_cam_layer="features.5")
    out = workspace["root"] / "grad_cam"
    quick = ["--data", str(workspace["data"]), "--erasure", "--saliency-method", "grad_cam", "--sweep-top-percent",
             "5", "--sweep-box", "3", "--sweep-methods", "grad_cam", "--control-draws", "2", "--sweep-fill", "mean",
             "--device", "cpu", "--no-progress", "--no-policy", "--min-count", "2"]
    assert main(["analyze", "--repository", str(repo), "--out", str(out), *quick]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    setting = metrics["erasure"]["tiny_cam"]["settings"][0]
    assert setting["saliency"]["errors"] == metrics["models"]["tiny_cam"]["errors"]
    capsys.readouterr()
    missing = workspace["root"] / "no_layer"
    assert main(["analyze", "--repository", str(workspace["repo"]), "--models", "tiny_a", "--out", str(missing),
                 *quick]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model tiny_a: no Grad-CAM layer for architecture 'tiny'" in err[0], err
    assert not missing.exists()


def planted_run(settings: list[tuple[float, int]]) -> SplitRun:
    """Three classes; pair 0->1: 30 errors saliency erasure fixes and random erasure does not; pair 2->1:
    30 errors both fix alike; 40 correct images of class 1, which erasure breaks when confidence is high."""
    labels = np.array([0] * 30 + [2] * 30 + [1] * 40)
    predicted = np.array([1] * 60 + [1] * 40)
    logits = np.zeros((100, 3), np.float32)
    logits[np.arange(100), predicted] = np.r_[np.full(60, 0.5), np.full(40, 3.0)]
    saliency = np.r_[np.zeros(30), np.r_[np.full(15, 2), np.full(15, 1)], np.zeros(40)].astype(int)
    random = np.r_[np.ones(30), np.r_[np.full(15, 2), np.full(15, 1)], np.ones(40)].astype(int)
    pixels = np.full((len(settings), 100), 9)
    return SplitRun(model="m", split="test", classes=CLASSES, positions=np.arange(100), labels=labels, logits=logits,
                    settings=settings, saliency_predicted=np.stack([saliency] * len(settings)),
                    random_predicted=np.stack([random] * len(settings)), saliency_pixels=pixels,
                    random_pixels=pixels, error_rows=np.flatnonzero(labels != predicted),
                    error_maps=np.zeros((60, 4, 4), np.float32))


def test_pair_verification_against_random_control() -> None:
    run = planted_run([(5.0, 3)])
    candidates = np.zeros((3, 3), bool)
    candidates[0, 1] = candidates[2, 1] = True
    summary = summarize(run, (5.0, 3), candidates, 0.05, "holm", control="random")
    assert summary.verified_pairs == [("cat", "dog")]
    pairs = {(p.true, p.pred): p for p in summary.pairs}
    test = pairs["cat", "dog"].compared.tests["random"]
    assert (test.saliency_only, test.control_only) == (30, 0) and test.p_value == pytest.approx(0.5 ** 30)
    verification = pairs["cat", "dog"].verification
    assert verification.difference == 1.0 and verification.control_corrected == 0.0
    assert verification.p_value == pytest.approx(1 / 10_000)  # every sign flip but the identity falls short
    ship = pairs["ship", "dog"].compared.outcomes
    assert ship["saliency"].corrected == 15 == ship["random"].corrected
    assert pairs["ship", "dog"].verified is False
    default = summary.settings[0].compared.outcomes
    assert default["saliency"].broken == 40 and default["random"].broken == 0


def planted_fit(run: SplitRun, index: int) -> dict:
    """The rules fitted on every image of `run` at its setting `index`, as a fit the policy functions take."""
    rules = setting_rules(run, index, np.arange(len(run.labels)), min_gain=1)
    return {"setting": run.settings[index], "rules": rules, "gain": sum(g for _, g in rules.values()), "n": 100}


def test_policy_rule_threshold_and_semantics() -> None:
    run = planted_run([(1.0, 1), (5.0, 3)])
    fit = planted_fit(run, 1)
    threshold, gain = fit["rules"][1]
    confidence = run.confidence
    assert threshold == pytest.approx(confidence[0]) and gain == 45
    assert threshold < confidence[60]
    corrected = apply_rules({1: threshold}, confidence, run.predicted, run.saliency_predicted[1])
    assert (corrected[:60] == run.saliency_predicted[1][:60]).all() and (corrected[60:] == 1).all()
    result = evaluate_policy(fit, run)
    assert result["corrected"] == 45 and result["broken"] == 0 and result["net_change"] == pytest.approx(0.45)
    assert result["ci95"][0] > 0.3
    assert setting_rules(run, 1, np.arange(100), min_gain=100) == {}


def test_blanket_erasure_and_break_even() -> None:
    run = planted_run([(5.0, 3)])
    result = evaluate_policy(planted_fit(run, 0), run)
    # erasing every image: 45 of 60 errors corrected, all 40 correct answers broken
    assert result["accuracy_blanket"] == pytest.approx(0.45) and result["accuracy_before"] == pytest.approx(0.40)
    assert result["blanket_corrected_rate"] == pytest.approx(0.75) and result["blanket_broken_rate"] == 1.0
    assert result["break_even_error_share"] == pytest.approx(1 / 1.75)


def test_cross_fit_never_scores_a_fold_with_its_own_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    run = planted_run([(1.0, 1), (5.0, 3)])
    chosen, scored = [], []
    real_select, real_labels = policy_selection.select, policy_selection.policy_labels

    def spy_select(run, rows, default, min_gain, folds, seed):
        fit = real_select(run, rows, default, min_gain, folds, seed)
        chosen.append((id(fit), set(rows.tolist())))
        return fit

    def spy_labels(fit, run, rows):
        scored.append((id(fit), set(rows.tolist())))
        return real_labels(fit, run, rows)

    monkeypatch.setattr(policy_selection, "select", spy_select)
    monkeypatch.setattr(policy_selection, "policy_labels", spy_labels)
    corrected, _, parts = policy_selection.cross_fit(run, (5.0, 3), min_gain=1, folds=4, seed=3)
    assert len(chosen) == len(scored) == 4
    fits = dict(chosen)
    for fit_id, rows in scored:
        assert not rows & fits[fit_id] and len(rows | fits[fit_id]) == 100
    assert set().union(*(rows for _, rows in scored)) == set(range(100))
    assert [f["n"] for f in parts] == [25] * 4
    # the planted structure holds in every fold, so the held-out folds gain like the whole: 45 of 60 errors
    assert (corrected == run.labels).sum() - (run.predicted == run.labels).sum() == 45
    monkeypatch.undo()
    validated = policy_selection.honest_fit(run, run, "train", (5.0, 3), 1, 0)
    assert validated.fitted_on == {"split": "val", "method": "validation"} and validated.written["n"] == 100
    crossed = policy_selection.honest_fit(run, run, None, (5.0, 3), 1, 0)
    assert crossed.fitted_on["method"] == "cross-fit" and "not recorded" in crossed.fitted_on["reason"]
    assert crossed.test["method"] == "cross-fit"
    assert len(crossed.selection["expected"]["folds"]) == policy_selection.FOLDS


def test_examples_spread_over_pairs() -> None:
    keys = np.array([5, 5, 5, 2, 2, 9, 5])
    assert round_robin(keys).tolist() == [0, 3, 5, 1, 4, 2, 6]
    assert round_robin(np.array([], dtype=int)).tolist() == []


def test_policy_document_reads_in_the_service() -> None:
    from miscause.policy import parse_policy

    run = planted_run([(5.0, 3)])
    honest = policy_selection.honest_fit(run, run, "train", (5.0, 3), 1, 0)
    assert honest.selection["applied"] and honest.written["rules"]
    document = policy_document("m", honest.written, honest.test, CLASSES, "gradient", [0.0, 0.0, 0.0],
                               {"split": "val"}, honest.selection, "2026-01-01T00:00:00+00:00", {})
    served = parse_policy(json.loads(json.dumps(document)), list(CLASSES), "policy.json")
    assert served.defaults == {"top_percent": 5.0, "box": 3, "fill": [0.0, 0.0, 0.0], "saliency_method": "gradient"}
    confidence = torch.from_numpy(run.confidence)
    applies = served.applies(torch.from_numpy(run.predicted), confidence).numpy()
    marker = np.full_like(run.predicted, -1)  # an "erased class" that shows where a rule applied
    ours = apply_rules({1: honest.written["rules"][1][0]}, run.confidence, run.predicted, marker) == -1
    assert (applies == ours).all() and applies.sum() == 60
