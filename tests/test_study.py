"""The study pipeline end to end at toy scale on the CPU: stages, resumption, report and summary."""

from __future__ import annotations

import json

from miscause.cli import main


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
