"""The erasure study's controls on planted data: the area-matched shifted control, the runner-up baseline, the
fills, the deletion and insertion curves, and result files with the new arrays (and version 1 files)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from test_analysis_erasure import CLASSES, MEAN, STD, Tiny, planted_run, workspace  # noqa: F401
from torch import nn

from miscause.cli import main
from miscause.jobs.analysis.erasure.collect import ModelRuns
from miscause.jobs.analysis.erasure.controls import shift_masks
from miscause.jobs.analysis.erasure.curves import Curves, area, compute_curves, ranks, step_counts
from miscause.jobs.analysis.erasure.fills import BLUR_SIGMA, canvas, fill_masked
from miscause.jobs.analysis.erasure.run import ErasureOptions, run_split
from miscause.jobs.analysis.erasure.runner_up import oracle, runner_up, runner_up_outcomes
from miscause.jobs.analysis.erasure.summaries import summarize
from miscause.jobs.analysis.inputs.repository_model import live_model
from miscause.jobs.analysis.inputs.results import combine_results, load_results, write_results
from miscause.jobs.analysis.patterns.misclassification import AnalysisOptions
from miscause.jobs.analysis.pipeline import Context, Study, analyze_runs
from miscause.repository import ModelConfig

CPU = torch.device("cpu")


def tiny_model(network: nn.Module, classes: tuple[str, ...] = CLASSES):
    """A network in memory as the analysis takes it."""
    config = ModelConfig("tiny", "tiny", classes, MEAN, STD, (3, 32, 32))
    return live_model("tiny", network.eval(), config, Path("tiny"), CPU)


def test_shifted_control_erases_exactly_the_saliency_pixel_count_per_image() -> None:
    torch.manual_seed(0)
    images = np.random.default_rng(0).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    labels = np.random.default_rng(1).integers(0, 3, 24)
    options = ErasureOptions(sweep_top_percent=(1.0, 5.0, 20.0), sweep_box=(1, 3, 5), sweep_fill=("mean",),
                             batch_size=10)
    run = run_split(tiny_model(Tiny()), images, labels, np.arange(24), "test", options, CPU, progress=False)
    assert run.anchors == ("saliency", "random", "shifted") and len(run.settings) == 9
    saliency, shifted = run.erased_pixels("saliency"), run.erased_pixels("shifted")
    assert saliency.shape == (9, 24) and (saliency > 0).all()
    np.testing.assert_array_equal(shifted, saliency)
    assert (run.erased_pixels("random")[run.settings.index((5.0, 3))] > saliency[run.settings.index((5.0, 3))]).any()


def test_shift_masks_roll_each_image_by_its_own_offset() -> None:
    masks = torch.rand(5, 7, 9) > 0.7
    offsets = torch.tensor([[0, 0], [1, 2], [6, 8], [3, 0], [0, 5]])
    moved = shift_masks(masks, offsets)
    for n, (dy, dx) in enumerate(offsets.tolist()):
        assert torch.equal(moved[n], torch.roll(masks[n], (dy, dx), dims=(0, 1)))
    assert torch.equal(moved.sum((1, 2)), masks.sum((1, 2)))


def test_runner_up_counts_on_a_constructed_case() -> None:
    # six images, true classes 0..; predicted = argmax, runner-up = second-largest logit
    logits = np.array([[1, 5, 3], [1, 5, 3], [0, 2, 4], [9, 1, 2], [9, 1, 2], [3, 3, 1]], dtype=np.float32)
    labels = np.array([2, 2, 1, 0, 0, 1])
    before = logits.argmax(1)
    second = runner_up(logits)
    assert before.tolist() == [1, 1, 2, 0, 0, 0] and second.tolist() == [2, 2, 1, 2, 2, 1]
    after = np.array([2, 0, 1, 2, 0, 0])  # errors: rows 0, 1, 2, 5 (runner-up true: 0, 1, 2, 5)
    result = runner_up_outcomes(labels, before, second, after)
    assert result["changed"] == 3 and result["to_runner_up"] == 2
    assert result["to_runner_up_rate"] == pytest.approx(2 / 3)
    assert result["runner_up_true"] == {"errors": 4, "corrected": 2, "corrected_rate": 0.5}
    assert result["runner_up_other"] == {"errors": 0, "corrected": 0, "corrected_rate": 0.0}
    # the runner-up rule on the images the erasure changed (rows 0, 1, 2, 3): corrects 0, 1, 2; breaks 3
    assert result["runner_up_on_changed"] == {"applied": 4, "corrected": 3, "broken": 1}
    labels_other = np.array([0, 2, 1, 0, 0, 2])  # row 0's runner-up (2) is now not its true class (0)
    split = runner_up_outcomes(labels_other, before, second, after)
    assert split["runner_up_true"]["errors"] == 2 and split["runner_up_other"] == {"errors": 2, "corrected": 0,
                                                                                  "corrected_rate": 0.0}
    assert oracle(labels, before, second) == {"applied": 6, "corrected": 4, "broken": 2, "errors": 4,
                                              "corrected_rate": 1.0, "correct": 2, "broken_rate": 1.0}


def test_summary_reports_runner_up_and_every_control() -> None:
    run = planted_run([(5.0, 3)])
    run.logits[:30, 0] = 0.2  # pair cat->dog: runner-up is the true class; ship->dog: runner-up is cat
    run.controls = {"shifted": (run.random_predicted.copy(), run.saliency_pixels.copy())}
    candidates = np.zeros((3, 3), bool)
    candidates[0, 1] = candidates[2, 1] = True
    summary = summarize(run, (5.0, 3), candidates, 0.05, "holm", control="shifted")
    default = summary["settings"][0]
    assert default["test_shifted"] == default["test"] and summary["control"] == "shifted"
    saliency = default["runner_up"]["saliency"]
    assert saliency["runner_up_true"] == {"errors": 30, "corrected": 30, "corrected_rate": 1.0}
    assert saliency["runner_up_other"] == {"errors": 30, "corrected": 15, "corrected_rate": 0.5}
    assert saliency["to_runner_up"] == 30 and saliency["changed"] == 45  # only cat->dog went to its runner-up
    assert summary["runner_up_oracle"]["corrected"] == 30 and summary["runner_up_oracle"]["broken"] == 40
    pairs = {(p["true"], p["pred"]): p for p in summary["pairs"]}
    assert pairs["cat", "dog"]["runner_up_true"] == 30 and pairs["ship", "dog"]["runner_up_true"] == 0
    assert pairs["cat", "dog"]["verified"] is True and pairs["cat", "dog"]["shifted"]["corrected"] == 0


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


def result_run(split: str) -> tuple:
    """A planted run with every anchor kind and a fill sweep, as `split`."""
    run = replace(planted_run([(1.0, 1), (5.0, 3)]), split=split)
    run.controls = {"shifted": (run.random_predicted[::-1].copy(), run.saliency_pixels.copy())}
    run.fill_predicted = {"mean": {"saliency": run.saliency_predicted[1], "random": run.random_predicted[1],
                                   "shifted": run.random_predicted[0]},
                          "blur": {"saliency": run.random_predicted[1], "random": run.saliency_predicted[1],
                                   "shifted": run.random_predicted[1]}}
    run.fill_setting = (5.0, 3)
    return run


def result_meta(options: ErasureOptions, anchors: dict) -> dict:
    return {"arch": "m", "classes": list(CLASSES), "mean": list(MEAN), "std": list(STD),
            "training": {"split": "train"}, "erasure": asdict(options), "anchors": anchors,
            "data": {"path": "data", "test_size": 100, "val_size": 100}, "device": "cpu"}


def test_result_files_round_trip_with_the_new_anchors_fills_and_curves(tmp_path: Path) -> None:
    runs = {split: result_run(split) for split in ("val", "test")}
    rng = np.random.default_rng(0)
    curves = Curves(np.array([3, 50, 70]), 4, {order: {mode: rng.random((3, 5)).astype(np.float32)
                                                       for mode in ("deletion", "insertion")}
                                               for order in ("gradient", "random")})
    options = ErasureOptions(sweep_top_percent=(1.0, 5.0), sweep_box=(1, 3), sweep_fill=("mean", "blur"))
    anchors = {"saliency": {}, "random": {}, "shifted": {}}
    write_results(tmp_path / "m.npz", result_meta(options, anchors),
                  ModelRuns(name="m", source="m", training_split="train", test=runs["test"], val=runs["val"],
                            curves=curves))
    meta, loaded = load_results(tmp_path / "m.npz")
    assert meta["format_version"] == 3 and meta["fill_sweep"] == {"setting": [5.0, 3], "fills": ["mean", "blur"]}
    for split in ("val", "test"):
        mine, theirs = getattr(loaded, split), runs[split]
        assert mine.anchors == ("saliency", "random", "shifted") and mine.fill_setting == (5.0, 3)
        for anchor in mine.anchors:
            np.testing.assert_array_equal(mine.after(anchor), theirs.after(anchor))
            np.testing.assert_array_equal(mine.erased_pixels(anchor), theirs.erased_pixels(anchor))
        for fill, by_anchor in theirs.fill_predicted.items():
            for anchor, after in by_anchor.items():
                np.testing.assert_array_equal(mine.fill_predicted[fill][anchor], after)
    np.testing.assert_array_equal(loaded.curves.rows, curves.rows)
    for order, by_mode in curves.probabilities.items():
        for mode, values in by_mode.items():
            np.testing.assert_array_equal(loaded.curves.probabilities[order][mode], values)
    assert loaded.normalization == (MEAN, STD)
    erasure, data = combine_results([(meta, loaded)], 5.0, 3, "gradient")
    assert erasure.sweep_fill == ("mean", "blur")
    result = analyze_runs([loaded], Study(erasure=erasure, control="shifted", policy_min_gain=1),
                          AnalysisOptions(min_count=2), Context(created="now", command="", versions={}), data)
    summary = result.erasure.summaries["m"]
    assert [f["fill"] for f in summary["fills"]["fills"]] == ["mean", "blur"]
    assert summary["curves"]["orders"]["gradient"]["deletion"]["auc"] == pytest.approx(
        float(area(curves.probabilities["gradient"]["deletion"]).mean()))
    assert result.randomisation is None and loaded.randomisation is None


def write_version_1(path: Path) -> None:
    """A result file as format version 1 wrote it: saliency and random anchors only, no fill sweep, no curves."""
    run = planted_run([(1.0, 1), (5.0, 3)])
    options = ErasureOptions(sweep_top_percent=(1.0, 5.0), sweep_box=(1, 3))
    stored = {key: value for key, value in asdict(options).items()
              if key not in ("sweep_fill", "curve_methods", "curve_steps", "curve_images", "insertion_canvas")}
    meta = {**result_meta(ErasureOptions(), {"saliency": {}, "random": {}}), "erasure": stored, "format_version": 1}
    arrays = {"meta": np.asarray(json.dumps(meta)), "settings": np.asarray(run.settings, dtype=np.float64)}
    for split in ("val", "test"):
        arrays.update({f"{split}/positions": run.positions, f"{split}/labels": run.labels,
                       f"{split}/logits": run.logits})
        for anchor in ("saliency", "random"):
            arrays[f"{split}/predicted/{anchor}"] = run.after(anchor).astype(np.int16)
            arrays[f"{split}/pixels/{anchor}"] = run.erased_pixels(anchor).astype(np.int32)
    arrays.update({"examples/rows": np.zeros(0, np.int64), "examples/after": np.zeros(0, np.int64),
                   "examples/image": np.zeros((0, 32, 32, 3), np.uint8), "examples/saliency": np.zeros((0, 32, 32)),
                   "examples/erased": np.zeros((0, 32, 32, 3), np.uint8), "examples/mask": np.zeros((0, 32, 32), bool)})
    np.savez_compressed(path, **arrays)


def test_version_1_result_files_still_make_the_report(tmp_path: Path, capsys) -> None:
    write_version_1(tmp_path / "v1.npz")
    meta, loaded = load_results(tmp_path / "v1.npz")
    assert loaded.test.anchors == ("saliency", "random") and loaded.test.fill_predicted == {} and loaded.curves is None
    erasure, _ = combine_results([(meta, loaded)], 5.0, 3, "gradient")
    assert erasure.sweep_fill == () and erasure.curve_methods == ()
    assert main(["analyze", "--results", str(tmp_path / "v1.npz"), "--out", str(tmp_path / "report"),
                 "--min-count", "2"]) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    summary = metrics["erasure"]["m"]
    assert summary["fills"] is None and summary["curves"] is None and "shifted" not in summary["settings"][0]
    assert summary["runner_up_oracle"]["errors"] == 60 and metrics["policies"]["m"]["fill"] == [0.0, 0.0, 0.0]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Runner-up baseline" in report and "does not carry the model-randomisation check" in report
    assert metrics["randomisation"] is None and "Saliency sanity check" not in report
    capsys.readouterr()
    for argv, message in ((["--control", "shifted"], "no 'shifted' control in these runs"),
                          (["--sweep-fill", "blur"], "--sweep-fill: result files hold finished runs"),
                          (["--curve-steps", "8"], "--curve-steps: result files hold finished runs"),
                          (["--randomisation-images", "8"], "--randomisation-images: result files hold finished")):
        assert main(["analyze", "--results", str(tmp_path / "v1.npz"), "--out", str(tmp_path / "bad"), *argv]) == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1
    assert not (tmp_path / "bad").exists()


def test_live_analysis_with_a_per_image_fill_and_the_shifted_control(workspace: dict, capsys) -> None:  # noqa: F811
    out = workspace["root"] / "controls"
    status = main(["analyze", "--repository", str(workspace["repo"]), "--models", "tiny_a", "--data",
                   str(workspace["data"]), "--erasure", "--out", str(out), "--sweep-top-percent", "5", "20",
                   "--sweep-box", "1", "3", "--fill", "blur", "--sweep-fill", "mean", "black", "--curve-images", "8",
                   "--curve-methods", "gradient", "input_x_gradient", "--curve-steps", "8", "--control", "shifted",
                   "--batch-size", "16", "--min-count", "2", "--device", "cpu", "--no-progress"])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    summary = metrics["erasure"]["tiny_a"]
    assert metrics["settings"]["erasure"]["fill"] == "blur" and summary["control"] == "shifted"
    for setting in summary["settings"]:
        assert setting["shifted"]["mean_erased_pixels"] == setting["saliency"]["mean_erased_pixels"]
        assert set(setting["runner_up"]) == {"saliency", "random", "shifted"}
    assert [f["fill"] for f in summary["fills"]["fills"]] == ["blur", "mean", "black"]
    assert summary["curves"]["images"] == 8 and set(summary["curves"]["orders"]) == {"gradient", "input_x_gradient",
                                                                                      "random"}
    assert len(summary["curves"]["orders"]["random"]["deletion"]["curve"]) == 9
    assert metrics["policies"] == {} and any("no correction policy" in w for w in metrics["warnings"])
    markdown = (out / "report.md").read_text()
    assert "Fill sweep at p = 5.0, b = 3" in markdown and "curves-tiny_a.png" in markdown
    assert (out / "figures" / "curves-tiny_a.png").is_file()
    capsys.readouterr()
    assert main(["analyze", "--repository", str(workspace["repo"]), "--erasure", "--fill", "1", "2",
                 "--out", str(out / "bad")]) == 2
    error = capsys.readouterr().err
    assert "--fill takes one of mean, black, image_mean, blur or three finite numbers" in error
    assert error.count("\n") == 1 and not (out / "bad").exists()
