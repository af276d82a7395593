"""The study pipeline end to end at toy scale on the CPU: stages, resumption, report and summary."""

from __future__ import annotations

import json

import pytest

from miscause.cli import main
from miscause.jobs.analysis.inputs.results import load_results
from miscause.jobs.study_designs import DESIGNS
from miscause.jobs.training import zoo


@pytest.mark.timeout(0)  # a whole toy study: on a loaded machine it may take many times its quiet minutes
def test_toy_study_runs_in_two_sittings_and_writes_the_report(tiny_folder, tmp_path, capsys):
    out = tmp_path / "study"
    args = ["study", "--data", str(tiny_folder), "--out", str(out), "--archs", "cifarnet", "mobilenet_v2",
            "--epochs", "1", "--batch-size", "32", "--limit", "96", "--sweep-fill", "mean", "blur",
            "--sweep-methods", "gradient", "--control-draws", "2",
            "--curve-images", "16", "--curve-methods", "gradient", "--randomisation-images", "1", "--no-progress"]
    assert main([*args, "--max-stages", "4"]) == 0
    first = json.loads((out / "study.json").read_text())
    assert list(first["stages"]) == ["train:cifarnet", "evaluate:cifarnet", "export:cifarnet", "train:mobilenet_v2"]
    assert "run again to continue" in capsys.readouterr().out

    assert main(args) == 0
    state = json.loads((out / "study.json").read_text())
    assert len(state["stages"]) == 7 and "analyze" in state["stages"]
    assert state["stages"]["train:cifarnet"] == first["stages"]["train:cifarnet"], "a finished stage ran again"
    for arch in ("cifarnet", "mobilenet_v2"):
        assert (out / "repository" / arch / "1" / "model.onnx").is_file()
        assert (out / "predictions" / f"{arch}-test.npz").is_file()
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert set(metrics["models"]) == {"cifarnet", "mobilenet_v2"}
    assert metrics["settings"]["erasure"]["sweep_fill"] == ["mean", "blur"]
    assert metrics["erasure"]["cifarnet"]["curves"]["images"] == 16
    assert metrics["endpoints"]["cifarnet"]["primary"]["draws"] == 2
    assert (out / "report" / "report.html").is_file()
    summary = (out / "summary.md").read_text()
    assert "| cifarnet |" in summary and "| mobilenet_v2 |" in summary
    assert "7/7 stages done" in capsys.readouterr().out


def test_stage_only_study_runs_a_stage_per_architecture_and_seed(tiny_folder, tmp_path, capsys):
    """Result files named for the model; the full sweep on the sweep seeds only; a stage whose result file
    exists is not run again, even when the study folder is lost."""
    out, results = tmp_path / "study", tmp_path / "results"
    args = ["study", "--stage-only", "--data", str(tiny_folder), "--out", str(out), "--results", str(results),
            "--archs", "cifarnet", "--seed", "3", "4", "--sweep-seeds", "3", "--epochs", "1", "--batch-size", "32",
            "--limit", "32", "--sweep-top-percent", "5", "10", "--sweep-box", "3", "--sweep-fill", "mean", "blur",
            "--curve-methods", "gradient", "--curve-images", "8", "--randomisation-images", "4", "--examples", "2",
            "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    assert sorted(p.name for p in results.iterdir()) == ["cifarnet_s3.npz", "cifarnet_s4.npz"]
    swept, swept_runs = load_results(results / "cifarnet_s3.npz")
    single, single_runs = load_results(results / "cifarnet_s4.npz")
    assert (swept["model"], swept["training"]["seed"], single["model"], single["training"]["seed"]) == (
        "cifarnet_s3", 3, "cifarnet_s4", 4)
    assert swept_runs.test.settings == [(5.0, 3), (10.0, 3)] and single_runs.test.settings == [(5.0, 3)]
    assert swept["curves"] is not None and single["curves"] is None and single_runs.curves is None
    assert swept["fill_sweep"] is not None and single["fill_sweep"] is None
    assert set(single_runs.test.controls) == set(swept_runs.test.controls) and single["randomisation"] is not None
    assert json.loads((out / "study.json").read_text())["stages"].keys() == {"stage:cifarnet_s3", "stage:cifarnet_s4"}

    written = {p.name: p.stat().st_mtime_ns for p in results.iterdir()}
    (out / "study.json").unlink()
    capsys.readouterr()
    assert main(args) == 0
    assert capsys.readouterr().out.count("exists, the stage is not run again") == 2
    assert {p.name: p.stat().st_mtime_ns for p in results.iterdir()} == written


def test_dry_run_of_the_cpu_design_plans_every_stage_seed_by_seed(tiny_folder, capsys):
    design = DESIGNS["cpu"]
    assert set(design.epochs) == set(design.archs) <= set(zoo.REGISTRY) and set(design.sweep_seeds) <= set(design.seeds)
    assert main(["study", "--dry-run", "--design", "cpu", "--stage-only", "--archs", "cifarnet",
                 "--data", str(tiny_folder), "--limit", "32", "--batch-size", "16", "--device", "cpu"]) == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert [row[0] for row in rows] == [f"| cifarnet_s{seed}" for seed in design.seeds]
    assert [row[2] for row in rows] == [f"{design.epochs['cifarnet']} ({design.epochs['cifarnet']})"] * 3
    assert all(abs(float(row[9]) - float(row[8]) / 60) <= 0.06 for row in rows)  # stage min, stage s


def test_design_and_seeds_need_stage_only(tiny_folder, tmp_path, capsys):
    for extra in (["--design", "cpu"], ["--seed", "0", "1"], ["--results", str(tmp_path / "r")]):
        assert main(["study", "--data", str(tiny_folder), "--out", str(tmp_path / "study"), *extra]) == 2
        assert "need --stage-only" in capsys.readouterr().err
    assert not (tmp_path / "study").exists()
