"""The study's self-contained device stage at toy scale on the CPU: the prepared script runs two stages from a
packed dataset, their result files alone make the report, and its numbers are those the trained models give
when asked directly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from miscause import kernels
from miscause.cli import main
from miscause.jobs.analysis.erasure.fills import canvas, fill_masked
from miscause.jobs.analysis.erasure.summaries import outcomes
from miscause.jobs.analysis.inputs.results import load_results
from miscause.jobs.study_plan import StagePlan, fit_epochs
from miscause.jobs.training.checkpoint import load_model
from miscause.jobs.training.data import load_split
from miscause.jobs.training.zoo import served_model
from miscause.pixels import normalize

# behaviour, not speed: no time limit (the suite's default one included), so a loaded machine only waits longer
pytestmark = pytest.mark.timeout(0)

REPO = Path(__file__).resolve().parents[1]
ARCHS = ("cifarnet", "mobilenet_v2")
LIMIT = 32
VAL = 32  # the packed training images hold 40 validation images, of which the limit keeps this many
SETTINGS = [(5.0, 3), (10.0, 3)]
OPTIONS = (f"--epochs 1 --limit {LIMIT} --batch-size 32 --sweep-top-percent 5 10 --sweep-box 3 --sweep-fill mean blur "
           "--sweep-methods gradient --control-draws 2 --curve-methods gradient --curve-images 16 "
           "--randomisation-images 1 --device cpu")


@pytest.fixture(scope="module")
def device_run(cifar10_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """benchmarks/gpu/study.sh on 400 training and 200 test images of CIFAR-10, packed and carried as on a
    lent machine; with no budget and no time limit, so a loaded machine changes how long it takes, not what it
    does."""
    tool = cifar10_root.parents[1] / "tools" / "cifar10_pack.py"
    if not tool.is_file():
        pytest.skip(f"the packing tool is not at {tool}")
    root = tmp_path_factory.mktemp("stage")
    for split, count in (("train", 40), ("test", 20)):
        for folder in sorted((cifar10_root / split).iterdir()):
            (root / "tiny" / split / folder.name).mkdir(parents=True)
            for image in sorted(folder.iterdir())[:count]:
                shutil.copy(image, root / "tiny" / split / folder.name / image.name)
    (root / "carry").mkdir()
    shutil.copy(tool, root / "carry" / tool.name)
    subprocess.run([sys.executable, str(tool), "pack", str(root / "tiny"), str(root / "carry" / "cifar10.pack.npz")],
                   check=True, capture_output=True)
    env = {**os.environ, "OUT": str(root / "out"), "CARRY": str(root / "carry"), "STUDY_WORK": str(root / "work"),
           "PYTHON": sys.executable, "STUDY_OPTIONS": OPTIONS, "STUDY_BUDGET_MINUTES": "none"}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu" / "study.sh"), *ARCHS], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return {"root": root, "out": root / "out", "work": root / "work", "data": root / "work" / "cifar10",
            "log": done.stdout}


def test_script_keeps_one_result_file_per_architecture_and_the_log(device_run: dict) -> None:
    out = device_run["out"]
    assert sorted(p.name for p in out.iterdir()) == ["cifarnet_s0.npz", "mobilenet_v2_s0.npz", "study.log"]
    assert "2/2 stages done" in (out / "study.log").read_text()
    for arch in ARCHS:
        meta, runs = load_results(out / f"{arch}_s0.npz")
        assert (out / f"{arch}_s0.npz").stat().st_size < 1_000_000
        assert meta["arch"] == arch and meta["model"] == f"{arch}_s0" and meta["training"]["seed"] == 0
        assert meta["epochs"] == 1 and meta["device"].startswith("cpu")
        assert meta["plan"]["epochs"] == 1 and meta["plan"]["images"] == {"train": LIMIT, "val": VAL, "test": LIMIT}
        assert meta["training"]["split"] == "train" and len(meta["training"]["epochs"]) == 1
        assert set(meta["seconds"]) >= {"train", "erasure_val", "erasure_test", "total"}
        assert meta["erasure"]["sweep_top_percent"] == [5.0, 10.0]
        assert meta["anchors"]["saliency"]["method"] == "gradient"
        assert len(runs.test.labels) == LIMIT and len(runs.val.labels) == VAL and runs.test.settings == SETTINGS
        assert meta["accuracy"]["test"] == pytest.approx(float((runs.test.predicted == runs.test.labels).mean()))
        assert 0 < len(runs.examples) <= 8
    assert (device_run["work"] / "study" / "runs" / "cifarnet_s0" / "checkpoint.pt").is_file()


def test_result_files_alone_reproduce_what_the_trained_models_give(device_run: dict, tmp_path: Path) -> None:
    files = [str(device_run["out"] / f"{arch}_s0.npz") for arch in ARCHS]
    assert main(["analyze", "--results", *files, "--out", str(tmp_path / "report"), "--min-count", "2"]) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    models = {f"{arch}_s0" for arch in ARCHS}
    assert set(metrics["models"]) == models == set(metrics["erasure"]) == set(metrics["policies"])
    test = load_split(device_run["data"], "test")
    for arch in ARCHS:
        run_dir = device_run["work"] / "study" / "runs" / f"{arch}_s0"
        network, state = load_model(run_dir / "checkpoint.pt")
        model = served_model(network, state["recipe"]["tta"])
        predictions = tmp_path / f"{arch}.npz"
        assert main(["evaluate", "--checkpoint", str(run_dir / "checkpoint.pt"),
                     "--data", str(device_run["data"]), "--split", "test", "--out", str(predictions),
                     "--device", "cpu", "--no-progress"]) == 0
        _, runs = load_results(device_run["out"] / f"{arch}_s0.npz")
        with np.load(predictions) as evaluated:
            logits, labels = evaluated["logits"][runs.test.positions], evaluated["labels"][runs.test.positions]
        np.testing.assert_allclose(runs.test.logits, logits, atol=1e-4)
        expected = np.zeros((10, 10), int)
        np.add.at(expected, (labels, logits.argmax(1)), 1)
        assert metrics["models"][f"{arch}_s0"]["confusion"] == expected.tolist()

        x = normalize(torch.from_numpy(test.images[runs.test.positions]), state["mean"], state["std"])
        saliency, _ = kernels.saliency(model, x)
        summary = metrics["erasure"][f"{arch}_s0"]
        for setting, (top_percent, box) in zip(summary["settings"], SETTINGS, strict=True):
            erased, mask = kernels.erase(x, saliency, top_percent, box)
            with torch.no_grad():
                after = model(erased).argmax(1).numpy()
            assert (setting["top_percent"], setting["box"]) == (top_percent, box)
            assert setting["saliency"] == {**asdict(outcomes(labels, logits.argmax(1), after)),
                                           "mean_erased_pixels": pytest.approx(mask.sum((1, 2)).float().mean().item())}
            anchors = kernels.anchor_count(top_percent, 32 * 32)
            assert anchors <= setting["random"]["mean_erased_pixels"] <= anchors * box * box
            assert set(setting["runner_up"]) == {"saliency", "random", "matched"}
        mask = kernels.erase(x, saliency, *SETTINGS[0])[1]
        with torch.no_grad():
            blurred = model(fill_masked(x, mask, canvas(x, "blur", state["mean"], state["std"]))).argmax(1).numpy()
        fills = {f["fill"]: f for f in summary["fills"]["fills"]}
        assert list(fills) == ["mean", "blur"] and fills["mean"]["saliency"] == {
            key: value for key, value in summary["settings"][0]["saliency"].items() if key != "mean_erased_pixels"}
        assert fills["blur"]["saliency"] == asdict(outcomes(labels, logits.argmax(1), blurred))
        assert summary["curves"]["images"] == 16 and set(summary["curves"]["orders"]) == {"gradient", "random"}
        endpoints = metrics["endpoints"][f"{arch}_s0"]
        assert endpoints["primary"]["draws"] == 2 and {c["method"] for c in endpoints["sweep"]} == {"gradient"}
        policy = metrics["policies"][f"{arch}_s0"]
        assert policy["test"]["n"] == LIMIT and policy["fitted_on"]["n"] == VAL
        assert policy["test"]["accuracy_before"] == pytest.approx(float((logits.argmax(1) == labels).mean()))
    figures = {p.name for p in (tmp_path / "report" / "figures").iterdir()}
    assert {"erasure-cifarnet_s0.png", "examples-mobilenet_v2_s0.png", "network-consensus.png"} <= figures


def test_result_files_refuse_what_they_cannot_answer(device_run: dict, tmp_path: Path, capsys) -> None:
    good = str(device_run["out"] / "cifarnet_s0.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, meta=np.asarray("{}"))
    for argv, message in (([str(bad)], "not a study result file"),
                          ([good, "--top-percent", "2"], "drew their controls at top percent 5, box 3"),
                          ([good, "--saliency-method", "smoothgrad"], "saliency method 'gradient' only"),
                          ([good, "--data", str(device_run["data"])], "--data: result files hold finished runs")):
        assert main(["analyze", "--results", *argv, "--out", str(tmp_path / "report")]) == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1
    assert not (tmp_path / "report").exists()


def test_dry_run_prints_the_plan_measured_on_this_device(device_run: dict, capsys) -> None:
    """A budget no toy stage can reach however loaded the machine: the plan keeps the recipe's epochs."""
    assert main(["study", "--dry-run", "--stage-only", "--archs", "cifarnet", "--data", str(device_run["data"]),
                 "--epochs", "3", "--limit", str(LIMIT), "--batch-size", "32", "--sweep-top-percent", "5",
                 "--sweep-box", "3", "--device", "cpu", "--budget-minutes", "100000"]) == 0
    printed = capsys.readouterr().out
    assert "| cifarnet_s0 | 32 | 3 (3) |" in printed and printed.splitlines()[2].endswith("| 6000000 |")
    assert "measured on cpu (" in printed and "the estimate holds for that device only" in printed


def test_epochs_fitted_to_a_budget() -> None:
    plan = StagePlan("resnet50", "cuda:0 (GPU)", 512, 40, 40, {"train": 45_000, "val": 5_000, "test": 10_000},
                     step_seconds=0.1, pass_seconds=1e-5, erasure_passes={"test": 100, "val": 100})
    assert plan.steps_per_epoch == 87
    assert plan.epoch_seconds == pytest.approx(0.1 * (87 + 10 / 3))
    assert plan.erasure_seconds == pytest.approx(15.0)
    affordable = fit_epochs(plan, budget_seconds=15 + 20 + 10 * plan.epoch_seconds + 1)
    assert affordable.epochs == 10 and affordable.budget_seconds == pytest.approx(35 + 10 * plan.epoch_seconds + 1)
    assert affordable.total_seconds == pytest.approx(10 * plan.epoch_seconds + 35)
    assert fit_epochs(plan, 10_000).epochs == 40 and fit_epochs(plan, 1).epochs == 1


def test_the_stage_needs_no_statsmodels_and_the_wheelhouse_carries_scikit_image() -> None:
    """The device image lacks both: the stage's code (training, collect_runs, the result file) must not import
    statsmodels, and the scikit-image it imports for the cascade's SSIM travels in `make wheelhouse` (as does the
    service's aiohttp): the names in the command make would run."""
    code = ("import sys, miscause.jobs.study_stage, miscause.jobs.study_plan; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'statsmodels', 'skimage'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() in ("[]", "['skimage']")
    wheelhouse = subprocess.run(["make", "-n", "wheelhouse"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout
    assert all(f"|{name}|" in wheelhouse for name in ("scikit-image", "imageio", "tifffile", "lazy-loader", "aiohttp"))
