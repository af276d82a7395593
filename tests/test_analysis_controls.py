"""The erasure study's controls: the shifted control (never overlapping, the same pixel count, a non-zero offset),
the location-matched control (another image's mask of the same predicted class), settings without an admissible
offset, the runner-up baseline, the fills, the deletion and insertion curves, and result files (format 4; older
ones refused)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.ndimage import gaussian_filter
from test_analysis_erasure import CLASSES, MEAN, STD, Tiny, planted_run, workspace  # noqa: F401
from torch import nn

from miscause.cli import main
from miscause.errors import MiscauseError
from miscause.jobs.analysis.erasure.collect import ModelRuns
from miscause.jobs.analysis.erasure.controls import (
    admissible_offsets,
    check_shiftable,
    draw_donors,
    draw_offsets,
    shift_masks,
)
from miscause.jobs.analysis.erasure.curves import Curves, area, compute_curves, ranks, step_counts
from miscause.jobs.analysis.erasure.fills import BLUR_SIGMA, canvas, fill_masked
from miscause.jobs.analysis.erasure.run import Draws, ErasureOptions, MethodRun, SplitRun, run_split
from miscause.jobs.analysis.erasure.runner_up import (
    GroupCorrection,
    Oracle,
    RuleOutcomes,
    oracle,
    runner_up,
    runner_up_outcomes,
)
from miscause.jobs.analysis.erasure.summaries import summarize
from miscause.jobs.analysis.inputs.repository_model import live_model
from miscause.jobs.analysis.inputs.results import anchor_descriptions, combine_results, load_results, write_results
from miscause.jobs.analysis.patterns.misclassification import AnalysisOptions
from miscause.jobs.analysis.pipeline import Context, Study, analyze_runs
from miscause.repository import ModelConfig

CPU = torch.device("cpu")


def tiny_model(network: nn.Module, classes: tuple[str, ...] = CLASSES):
    """A network in memory as the analysis takes it."""
    config = ModelConfig("tiny", "tiny", classes, MEAN, STD, (3, 32, 32))
    return live_model("tiny", network.eval(), config, Path("tiny"), CPU)


def test_every_control_of_a_live_run_where_it_should_be() -> None:
    torch.manual_seed(0)
    images = np.random.default_rng(0).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    labels = np.random.default_rng(1).integers(0, 3, 24)
    options = ErasureOptions(top_percent=1.0, box=1, sweep_top_percent=(1.0, 5.0), sweep_box=(1, 3),
                             sweep_fill=("mean",), sweep_methods=("gradient",), control_draws=4, batch_size=10)
    run = run_split(tiny_model(Tiny()), images, labels, np.arange(24), "test", options, CPU, progress=False)
    assert run.anchors == ("saliency", "random", "matched") and len(run.settings) == 4
    assert run.draw_setting == (1.0, 1) and set(run.draws) == {"matched", "shifted"}
    assert (run.draws["matched"].count == 4).all() and set(run.draws["shifted"].count.tolist()) <= {0, 4}
    shiftable = run.draws["shifted"].count > 0
    assert shiftable.any()
    saliency, shifted = run.geometry["saliency"], run.geometry["shifted"]
    np.testing.assert_array_equal(shifted[0, shiftable], saliency[0, shiftable])  # the same pixel count
    assert (shifted[2, shiftable] == 0).all() and np.isnan(shifted[:, ~shiftable]).all()  # never overlapping
    assert (run.erased_pixels("saliency") > 0).all() and run.methods == {}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 4), st.integers(2, 9), st.integers(2, 9), st.floats(0.05, 0.6), st.integers(0, 2 ** 16))
def test_shifted_masks_never_overlap_keep_the_pixel_count_and_move(n: int, h: int, w: int, density: float,
                                                                   seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    masks = torch.rand(n, h, w, generator=generator) < density
    masks[:, 0, 0] = True  # never empty, as an erasure's mask
    offsets, valid = draw_offsets(masks, 5, generator)
    assert offsets.shape == (5, n, 2)
    for draw in offsets:
        moved = shift_masks(masks, draw)
        assert torch.equal(moved.sum((1, 2)), masks.sum((1, 2)))
        for i in np.flatnonzero(valid.numpy()):
            assert not (moved[i] & masks[i]).any() and draw[i].tolist() != [0, 0]
    for i in np.flatnonzero(~valid.numpy()):  # no admissible offset: every shift overlaps
        assert all((torch.roll(masks[i], (dy, dx), (0, 1)) & masks[i]).any() for dy in range(h) for dx in range(w))


def test_offsets_are_uniform_among_the_admissible_ones() -> None:
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True  # admissible: dy or dx in {2}, 7 of the 16 offsets
    offsets, valid = draw_offsets(masks, 7000, torch.Generator().manual_seed(1))
    counts = np.zeros((4, 4))
    np.add.at(counts, (offsets[:, 0, 0].numpy(), offsets[:, 0, 1].numpy()), 1)
    allowed = admissible_offsets(masks)[0].numpy()
    assert valid.all() and allowed.sum() == 7 and (counts[~allowed] == 0).all()
    assert stats.chisquare(counts[allowed]).pvalue > 1e-3


@given(st.lists(st.integers(0, 3), min_size=2, max_size=40), st.integers(0, 2 ** 16))
@settings(max_examples=60, deadline=None)
def test_donors_are_other_images_of_the_same_predicted_class(predicted: list[int], seed: int) -> None:
    predicted = np.array(predicted)
    donors = draw_donors(predicted, 6, np.random.default_rng(seed))
    rows = np.arange(len(predicted))
    assert donors.shape == (6, len(predicted)) and (donors != rows).all()
    alone = np.array([np.sum(predicted == c) == 1 for c in predicted])
    assert (predicted[donors][:, ~alone] == predicted[~alone]).all()


class CentralEvidence(nn.Module):
    """Evidence in the central 8 x 8 only: the gradient is zero elsewhere, so every saliency mask lies there."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evidence = (x[:, :, 12:20, 12:20] * torch.linspace(0.5, 1.5, 64).view(1, 1, 8, 8)).sum((1, 2, 3))
        return torch.stack([evidence, -evidence, torch.zeros_like(evidence)], dim=1)


def test_the_location_matched_control_erases_where_saliency_does() -> None:
    images = np.random.default_rng(2).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    labels = np.random.default_rng(3).integers(0, 3, 20)
    options = ErasureOptions(top_percent=2.0, box=1, sweep_top_percent=(2.0,), sweep_box=(1,), sweep_fill=(),
                             sweep_methods=("gradient",), control_draws=10, batch_size=8)
    run = run_split(tiny_model(CentralEvidence()), images, labels, np.arange(20), "test", options, CPU,
                    progress=False)
    geometry = {anchor: values.astype(np.float64) for anchor, values in run.geometry.items()}
    assert (geometry["saliency"][1] == 1).all() and (geometry["matched"][1] == 1).all()  # all in the centre
    shiftable = run.draws["shifted"].count > 0
    assert shiftable.all() and geometry["shifted"][1].mean() < 0.75 and (geometry["shifted"][2] == 0).all()
    assert geometry["random"][1].mean() < 0.5


def test_settings_whose_masks_cover_most_of_the_image_are_refused() -> None:
    check_shiftable(32, 32, (5.0, 3))
    with pytest.raises(MiscauseError, match="at most half the image"):
        check_shiftable(32, 32, (60.0, 1))
    with pytest.raises(MiscauseError, match="every mask of a 4 x 4 image covers at least 9"):
        check_shiftable(4, 4, (5.0, 5))


def test_runner_up_counts_on_a_constructed_case() -> None:
    # six images, true classes 0..; predicted = argmax, runner-up = second-largest logit
    logits = np.array([[1, 5, 3], [1, 5, 3], [0, 2, 4], [9, 1, 2], [9, 1, 2], [3, 3, 1]], dtype=np.float32)
    labels = np.array([2, 2, 1, 0, 0, 1])
    before = logits.argmax(1)
    second = runner_up(logits)
    assert before.tolist() == [1, 1, 2, 0, 0, 0] and second.tolist() == [2, 2, 1, 2, 2, 1]
    after = np.array([2, 0, 1, 2, 0, 0])  # errors: rows 0, 1, 2, 5 (runner-up true: 0, 1, 2, 5)
    result = runner_up_outcomes(labels, before, second, after)
    assert result.changed == 3 and result.to_runner_up == 2
    assert result.to_runner_up_rate == pytest.approx(2 / 3)
    assert result.runner_up_true == GroupCorrection(errors=4, corrected=2, corrected_rate=0.5)
    assert result.runner_up_other == GroupCorrection(errors=0, corrected=0, corrected_rate=0.0)
    # the runner-up rule on the images the erasure changed (rows 0, 1, 2, 3): corrects 0, 1, 2; breaks 3
    assert result.runner_up_on_changed == RuleOutcomes(applied=4, corrected=3, broken=1)
    labels_other = np.array([0, 2, 1, 0, 0, 2])  # row 0's runner-up (2) is now not its true class (0)
    split = runner_up_outcomes(labels_other, before, second, after)
    assert split.runner_up_true.errors == 2
    assert split.runner_up_other == GroupCorrection(errors=2, corrected=0, corrected_rate=0.0)
    assert oracle(labels, before, second) == Oracle(applied=6, corrected=4, broken=2, errors=4, corrected_rate=1.0,
                                                    correct=2, broken_rate=1.0)


def test_summary_reports_runner_up_and_every_control() -> None:
    run = planted_run([(5.0, 3)])
    run.logits[:30, 0] = 0.2  # pair cat->dog: runner-up is the true class; ship->dog: runner-up is cat
    run.controls = {"matched": (run.random_predicted.copy(), run.saliency_pixels.copy())}
    candidates = np.zeros((3, 3), bool)
    candidates[0, 1] = candidates[2, 1] = True
    summary = summarize(run, (5.0, 3), candidates, 0.05, "holm", control="matched")
    default = summary.settings[0]
    assert default.compared.tests["matched"] == default.compared.tests["random"] and summary.control == "matched"
    saliency = default.runner_up["saliency"]
    assert saliency.runner_up_true == GroupCorrection(errors=30, corrected=30, corrected_rate=1.0)
    assert saliency.runner_up_other == GroupCorrection(errors=30, corrected=15, corrected_rate=0.5)
    assert saliency.to_runner_up == 30 and saliency.changed == 45  # only cat->dog went to its runner-up
    assert summary.runner_up_oracle.corrected == 30 and summary.runner_up_oracle.broken == 40
    pairs = {(p.true, p.pred): p for p in summary.pairs}
    assert pairs["cat", "dog"].runner_up_true == 30 and pairs["ship", "dog"].runner_up_true == 0
    assert pairs["cat", "dog"].verified is True and pairs["cat", "dog"].compared.outcomes["matched"].corrected == 0


def test_fills_give_the_right_pixel_values() -> None:
    x = torch.randn(2, 3, 16, 16)
    mask = torch.zeros(2, 16, 16, dtype=torch.bool)
    mask[0, 3:6, 4:9] = mask[1, 10:, :2] = True
    unmasked = ~mask.unsqueeze(1).expand_as(x)
    expected = {
        "mean": torch.zeros_like(x),
        "black": ((0 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, 3, 1, 1).expand_as(x),
        "image_mean": x.mean((2, 3), keepdim=True).expand_as(x),
        "blur": torch.from_numpy(gaussian_filter(x.numpy(), (0, 0, BLUR_SIGMA, BLUR_SIGMA), mode="nearest",
                                                 truncate=3.0)),
        (0.5, -1.0, 2.0): torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1).expand_as(x),
    }
    for fill, values in expected.items():
        erased = fill_masked(x, mask, canvas(x, fill, MEAN, STD))
        assert torch.equal(erased[unmasked], x[unmasked]), fill
        torch.testing.assert_close(erased[~unmasked], values[~unmasked], atol=1e-5, rtol=0, msg=str(fill))
    black = fill_masked(x, mask, canvas(x, "black", MEAN, STD))
    pixels = black * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    assert torch.allclose(pixels[~unmasked], torch.zeros(()), atol=1e-6)


class OnePatch(nn.Module):
    """Evidence in one known 4x4 region: logit 0 is the mean of channel 0 there, logit 1 is zero."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evidence = x[:, 0, 8:12, 20:24].mean((1, 2))
        return torch.stack([evidence, torch.zeros_like(evidence)], dim=1)


def test_deletion_drops_first_and_insertion_rises_first_for_the_saliency_order() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(100, 156, (6, 32, 32, 3), dtype=np.uint8)
    images[:, 8:12, 20:24, 0] = 255  # evidence for class 0 in the patch only: logit (1 - 0.5) / 0.25 = 2
    model = tiny_model(OnePatch(), ("a", "b"))
    options = ErasureOptions(curve_methods=("gradient",), curve_steps=16, curve_images=6, insertion_canvas="mean",
                             batch_size=4)
    curves = compute_curves(model, images, options, CPU)
    assert curves.rows.tolist() == list(range(6)) and set(curves.probabilities) == {"gradient", "random"}
    deletion, random_deletion = (curves.probabilities[order]["deletion"] for order in ("gradient", "random"))
    assert deletion.shape == (6, 17) and deletion[:, 0] == pytest.approx(random_deletion[:, 0])
    assert deletion[:, 0] == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert deletion[:, 1:] == pytest.approx(0.5)  # the first step (64 pixels) deletes the whole 16-pixel patch
    assert (random_deletion[:, 1] > 0.5).all()
    assert area(deletion).mean() < area(random_deletion).mean() - 0.1
    insertion, random_insertion = (curves.probabilities[order]["insertion"] for order in ("gradient", "random"))
    assert insertion[:, 0] == pytest.approx(0.5) and insertion[:, 1:] == pytest.approx(deletion[:, 0].mean())
    assert area(insertion).mean() > area(random_insertion).mean() + 0.1


def test_curve_steps_ranks_and_area() -> None:
    assert step_counts(1024, 16) == [64 * t for t in range(17)]
    assert step_counts(10, 4) == [0, 3, 5, 8, 10]
    assert ranks(torch.tensor([[[1.0, 3.0], [3.0, 0.0]]])).tolist() == [[2, 0, 1, 3]]
    assert area(np.array([1.0, 0.0, 0.0])) == pytest.approx(0.25)


def result_run(split: str) -> SplitRun:
    """A planted run with every anchor kind, a fill sweep and (on test) the drawn controls, their geometry and a
    further method, as `split`."""
    run = replace(planted_run([(1.0, 1), (5.0, 3)]), split=split)
    run.controls = {"matched": (run.random_predicted[::-1].copy(), run.saliency_pixels.copy())}
    run.fill_predicted = {"mean": {"saliency": run.saliency_predicted[1], "random": run.random_predicted[1],
                                   "matched": run.random_predicted[0]},
                          "blur": {"saliency": run.random_predicted[1], "random": run.saliency_predicted[1],
                                   "matched": run.random_predicted[1]}}
    run.fill_setting = run.draw_setting = (5.0, 3)
    rng = np.random.default_rng(len(split))
    after = rng.integers(0, 3, (10, 100))
    shiftable = rng.random(100) < 0.7
    run.draws = {"matched": Draws.of_classes(run.labels, run.predicted, after),
                 "shifted": Draws.of_classes(run.labels, run.predicted, after[::-1], shiftable)}
    run.geometry = {anchor: rng.random((3, 100)).astype(np.float16).astype(np.float32)
                    for anchor in ("saliency", "random", "matched", "shifted")}
    run.methods = {"integrated_gradients": MethodRun(
        saliency=rng.integers(0, 3, (2, 100)), matched=rng.integers(0, 3, (2, 100)),
        fills={fill: {anchor: rng.integers(0, 3, 100) for anchor in ("saliency", "matched")}
               for fill in ("mean", "blur")})}
    return run


def result_meta(options: ErasureOptions) -> dict:
    return {"arch": "m", "model": "m", "classes": list(CLASSES), "mean": list(MEAN), "std": list(STD),
            "training": {"split": "train"}, "erasure": asdict(options), "anchors": anchor_descriptions(options),
            "data": {"path": "data", "test_size": 100, "val_size": 100}, "device": "cpu"}


def test_result_files_round_trip_every_part(tmp_path: Path) -> None:
    runs = {split: result_run(split) for split in ("val", "test")}
    rng = np.random.default_rng(0)
    curves = Curves(np.array([3, 50, 70]), 4, {order: {mode: rng.random((3, 5)).astype(np.float32)
                                                       for mode in ("deletion", "insertion")}
                                               for order in ("gradient", "random")})
    options = ErasureOptions(sweep_top_percent=(1.0, 5.0), sweep_box=(1, 3), sweep_fill=("mean", "blur"),
                             sweep_methods=("gradient", "integrated_gradients"))
    write_results(tmp_path / "m.npz", result_meta(options),
                  ModelRuns(name="m", source="m", training_split="train", test=runs["test"], val=runs["val"],
                            curves=curves))
    meta, loaded = load_results(tmp_path / "m.npz")
    assert meta["format_version"] == 4 and meta["fill_sweep"] == {"setting": [5.0, 3], "fills": ["mean", "blur"]}
    assert meta["draws"] == 10 and meta["methods"] == ["integrated_gradients"]
    for split in ("val", "test"):
        mine, theirs = getattr(loaded, split), runs[split]
        assert mine.anchors == ("saliency", "random", "matched") and mine.fill_setting == (5.0, 3)
        for anchor in mine.anchors:
            np.testing.assert_array_equal(mine.after(anchor), theirs.after(anchor))
        for fill, by_anchor in theirs.fill_predicted.items():
            for anchor, after in by_anchor.items():
                np.testing.assert_array_equal(mine.fill_predicted[fill][anchor], after)
    test, planted = loaded.test, runs["test"]
    for anchor in test.anchors:
        np.testing.assert_array_equal(test.erased_pixels(anchor), planted.erased_pixels(anchor))
    for control, draws in planted.draws.items():
        for kind in ("count", "corrected", "changed"):
            np.testing.assert_array_equal(getattr(test.draws[control], kind), getattr(draws, kind))
    for anchor, values in planted.geometry.items():
        np.testing.assert_array_equal(test.geometry[anchor], values)
    mine, theirs = test.methods["integrated_gradients"], planted.methods["integrated_gradients"]
    np.testing.assert_array_equal(mine.saliency, theirs.saliency)
    np.testing.assert_array_equal(mine.matched, theirs.matched)
    np.testing.assert_array_equal(mine.fills["blur"]["matched"], theirs.fills["blur"]["matched"])
    assert test.draw_setting == (5.0, 3) and loaded.val.draws == {} and loaded.val.methods == {}
    np.testing.assert_array_equal(loaded.curves.rows, curves.rows)
    for order, by_mode in curves.probabilities.items():
        for mode, values in by_mode.items():
            np.testing.assert_array_equal(loaded.curves.probabilities[order][mode], values)
    assert loaded.normalization == (MEAN, STD)
    erasure, data = combine_results([(meta, loaded)], 5.0, 3, "gradient")
    assert erasure.sweep_fill == ("mean", "blur") and erasure.sweep_methods == ("gradient", "integrated_gradients")
    result = analyze_runs([loaded], Study(erasure=erasure, control="shifted", policy_min_gain=1),
                          AnalysisOptions(min_count=2), Context(created="now", command="", versions={}), data)
    summary = result.erasure.summaries["m"]
    assert [f.fill for f in summary.fills.fills] == ["mean", "blur"]
    assert result.erasure.curves["m"].orders["gradient"]["deletion"].auc == pytest.approx(
        float(area(curves.probabilities["gradient"]["deletion"]).mean()))
    assert result.randomisation is None and loaded.randomisation is None
    endpoints = result.erasure.endpoints["m"]
    assert endpoints.secondary[0].left_out == int((~(planted.draws["shifted"].count > 0)).sum())
    assert {(c.method, c.fill) for c in endpoints.sweep} == {(m, f) for m in ("gradient", "integrated_gradients")
                                                             for f in ("mean", "blur")}
    with pytest.raises(MiscauseError, match="drew their controls at top percent 5, box 3"):
        combine_results([(meta, loaded)], 1.0, 1, "gradient")


def test_result_files_of_an_older_format_are_refused_with_one_line(tmp_path: Path, capsys) -> None:
    run = planted_run([(5.0, 3)])
    meta = {**result_meta(ErasureOptions()), "format_version": 3}
    arrays = {"meta": np.asarray(json.dumps(meta)), "settings": np.asarray(run.settings, dtype=np.float64)}
    np.savez_compressed(tmp_path / "v3.npz", **arrays)
    assert main(["analyze", "--results", str(tmp_path / "v3.npz"), "--out", str(tmp_path / "report")]) == 2
    error = capsys.readouterr().err
    assert "result format version 3, this miscause reads version 4 only" in error and error.count("\n") == 1
    assert not (tmp_path / "report").exists()


def test_live_analysis_with_a_per_image_fill_and_the_shifted_control(workspace: dict, capsys) -> None:  # noqa: F811
    out = workspace["root"] / "controls"
    status = main(["analyze", "--repository", str(workspace["repo"]), "--models", "tiny_a", "--data",
                   str(workspace["data"]), "--erasure", "--out", str(out), "--top-percent", "1", "--box", "1",
                   "--sweep-top-percent", "1", "20", "--sweep-box", "1", "3", "--fill", "blur", "--sweep-fill",
                   "mean", "black", "--sweep-methods", "gradient", "--control-draws", "2", "--curve-images", "8",
                   "--curve-methods", "gradient", "input_x_gradient", "--curve-steps", "8", "--control", "shifted",
                   "--batch-size", "16", "--min-count", "2", "--device", "cpu", "--no-progress"])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    summary = metrics["erasure"]["tiny_a"]
    assert metrics["settings"]["erasure"]["fill"] == "blur" and summary["control"] == "shifted"
    for setting in summary["settings"]:
        assert set(setting["runner_up"]) == {"saliency", "random", "matched"}
    assert all(p["verification"]["draws"] in (0, 2) for p in summary["pairs"] if p["candidate"])
    geometry = {g["anchor"]: g for g in metrics["endpoints"]["tiny_a"]["geometry"]}
    assert geometry["shifted"]["max_saliency_overlap"] == 0 and geometry["saliency"]["saliency_overlap"] == 1
    assert geometry["shifted"]["pixels"] == pytest.approx(11, abs=0.01)  # the saliency mask's 11 pixels, moved
    assert [f["fill"] for f in summary["fills"]["fills"]] == ["blur", "mean", "black"]
    assert summary["curves"]["images"] == 8 and set(summary["curves"]["orders"]) == {"gradient", "input_x_gradient",
                                                                                      "random"}
    assert len(summary["curves"]["orders"]["random"]["deletion"]["curve"]) == 9
    assert metrics["policies"] == {} and any("no correction policy" in w for w in metrics["warnings"])
    markdown = (out / "report.md").read_text()
    assert "Fill sweep at p = 1.0, b = 1" in markdown and "curves-tiny_a.png" in markdown
    assert (out / "figures" / "curves-tiny_a.png").is_file() and (out / "figures" / "sweep-tiny_a.png").is_file()
    capsys.readouterr()
    for argv, message in ((["--fill", "1", "2"], "--fill takes one of mean, black, image_mean, blur or three"),
                          (["--top-percent", "60", "--sweep-top-percent", "60", "--sweep-box", "1", "--sweep-methods",
                            "gradient", "--device", "cpu", "--no-progress"],
                           "the shifted control needs masks of at most half the image")):
        assert main(["analyze", "--repository", str(workspace["repo"]), "--models", "tiny_a", "--data",
                     str(workspace["data"]), "--erasure", "--out", str(out / "bad"), *argv]) == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1 and not (out / "bad").exists()


def test_the_planned_passes_are_the_classifications_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from miscause.jobs.analysis.erasure import run as erasure_run

    calls = []
    real = erasure_run.classify
    monkeypatch.setattr(erasure_run, "classify", lambda model, x: calls.append(len(x)) or real(model, x))
    images = np.random.default_rng(4).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    options = ErasureOptions(top_percent=1.0, box=1, sweep_top_percent=(1.0, 2.0), sweep_box=(1,),
                             sweep_fill=("mean", "blur"), sweep_methods=("gradient", "integrated_gradients"),
                             control_draws=3, batch_size=8)
    run = run_split(tiny_model(Tiny()), images, np.zeros(8, int), np.arange(8), "test", options, CPU, progress=False)
    assert len(calls) == options.erasure_passes() == 3 * (2 + 1) + (2 + 3) + 2 * (2 + 1)
    assert set(run.methods) == {"integrated_gradients"} and options.saliency_passes() == 1 + 50
