"""Bad input to `miscause analyze`: one clear error line, exit status 2, and no output directory touched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from miscause.cli import COMMANDS, main, subcommand_parser
from miscause.jobs.analysis.report.write import ENTRIES

CLASSES = ("cat", "dog", "ship", "truck")


def write(path: Path, n: int = 200, classes: tuple[str, ...] = CLASSES, seed: int = 0, **override) -> Path:
    """A predictions file as `miscause evaluate` writes it, with ~20% errors; `override` replaces arrays."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(classes)
    predicted = np.where(rng.random(n) < 0.2, rng.integers(0, len(classes), n), labels)
    logits = rng.normal(0, 0.1, (n, len(classes))).astype(np.float32)
    logits[np.arange(n), predicted] += 4
    arrays = {"logits": logits, "labels": labels.astype(np.int64), "indices": np.arange(n, dtype=np.int64),
              "classes": np.asarray(classes)}
    arrays.update(override)
    np.savez(path, **arrays)
    return path


def fails(capsys: pytest.CaptureFixture, argv: list[str], message: str) -> None:
    """The command exits 2 with `message` in a single stderr line."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("miscause analyze: error:")
    assert message in err, err


def test_mismatched_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = write(tmp_path / "a.npz")
    out = str(tmp_path / "out")
    fails(capsys, ["analyze", "--predictions", str(a), str(write(tmp_path / "b.npz", classes=("cat", "dog", "ship",
                                                                                             "bus"))),
                   "--out", out], "classes")
    fails(capsys, ["analyze", "--predictions", str(a), str(write(tmp_path / "c.npz", n=180)), "--out", out],
          "180 samples")
    shuffled = write(tmp_path / "d.npz", labels=(np.arange(200) + 1) % 4)
    fails(capsys, ["analyze", "--predictions", str(a), str(shuffled), "--out", out], "labels differ")
    other = tmp_path / "other"
    other.mkdir()
    fails(capsys, ["analyze", "--predictions", str(a), str(write(other / "a.npz")), "--out", out],
          "model names repeat")
    assert not Path(out).exists()


def erasure_flags(command: str) -> dict[str, tuple]:
    """The erasure-settings flags of a subcommand's parser: flag -> (default, nargs, type, choices)."""
    parser, _ = subcommand_parser(f"miscause {command}", COMMANDS[command][0])
    group = next(g for g in parser._action_groups if g.title.startswith("erasure settings"))
    return {action.option_strings[0]: (action.default, action.nargs, action.type, action.choices)
            for action in group._group_actions}


def test_analyze_and_study_offer_the_same_erasure_options() -> None:
    analyze, study = erasure_flags("analyze"), erasure_flags("study")
    assert analyze == study
    assert {"--top-percent", "--box", "--fill", "--saliency-method", "--sweep-top-percent", "--sweep-box",
            "--sweep-fill", "--sweep-methods", "--control-draws", "--curve-methods", "--curve-steps", "--curve-images",
            "--insertion-canvas"} == set(analyze)
    assert (analyze["--top-percent"][0], analyze["--box"][0], analyze["--saliency-method"][0]) == (5.0, 3, "gradient")


def test_broken_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "out")
    nan = np.zeros((200, 4), np.float32)
    nan[17, 2] = np.nan
    fails(capsys, ["analyze", "--predictions", str(write(tmp_path / "nan.npz", logits=nan)), "--out", out],
          "1 of 200 rows of logits hold NaN or Inf (first at row 17)")
    empty = tmp_path / "empty.npz"
    empty.touch()
    fails(capsys, ["analyze", "--predictions", str(empty), "--out", out], "file is empty")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip file")
    fails(capsys, ["analyze", "--predictions", str(corrupt), "--out", out], "cannot read as .npz")
    missing = tmp_path / "missing.npz"
    np.savez(missing, logits=np.zeros((3, 4), np.float32))
    fails(capsys, ["analyze", "--predictions", str(missing), "--out", out], "missing labels, indices, classes")
    none = write(tmp_path / "none.npz", logits=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64),
                 indices=np.zeros(0, np.int64))
    fails(capsys, ["analyze", "--predictions", str(none), "--out", out], "holds no samples")
    fails(capsys, ["analyze", "--predictions", str(write(tmp_path / "range.npz", labels=np.full(200, 7))),
                   "--out", out], "labels must lie in [0, 3]")
    fails(capsys, ["analyze", "--predictions", str(tmp_path / "absent.npz"), "--out", out], "not found")
    assert not Path(out).exists()


def test_failed_run_leaves_existing_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["analyze", "--predictions", str(write(tmp_path / "good.npz")), "--out", str(out)]) == 0
    before = (out / "metrics.json").read_text()
    empty = tmp_path / "empty.npz"
    empty.touch()
    capsys.readouterr()
    fails(capsys, ["analyze", "--predictions", str(empty), "--out", str(out)], "file is empty")
    assert (out / "metrics.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.npz", "good.npz", "out"]


def test_a_report_replaces_only_a_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The report replaces its folder whole: it writes exactly the report's entries, rewrites a report's folder, and
    refuses a folder that holds anything else (here its own input file), leaving that folder as it was."""
    out = tmp_path / "out"
    assert main(["analyze", "--predictions", str(write(tmp_path / "good.npz")), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == ENTRIES
    assert main(["analyze", "--predictions", str(write(tmp_path / "good.npz", seed=1)), "--out", str(out)]) == 0
    study = tmp_path / "study"
    (study / "results").mkdir(parents=True)
    inputs = write(study / "results" / "a.npz")
    capsys.readouterr()
    fails(capsys, ["analyze", "--predictions", str(inputs), "--out", str(study)], "holds results, which is not part")
    assert [p.name for p in study.rglob("*")] == ["results", "a.npz"]
    (tmp_path / "file").touch()
    fails(capsys, ["analyze", "--predictions", str(inputs), "--out", str(tmp_path / "file")], "is not a directory")


def test_options_checked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good, out = str(write(tmp_path / "good.npz")), str(tmp_path / "out")
    fails(capsys, ["analyze", "--out", out], "exactly one of --predictions, --repository or --results")
    fails(capsys, ["analyze", "--predictions", good, "--erasure", "--out", out], "need --repository")
    fails(capsys, ["analyze", "--predictions", good, "--alpha", "2", "--out", out], "--alpha")
    fails(capsys, ["analyze", "--predictions", good, "--tolerance", "-1", "--out", out], "--tolerance")
    fails(capsys, ["analyze", "--repository", str(tmp_path / "nowhere"), "--out", out], "not found")
    assert not Path(out).exists()


def test_analysis_options_checked_once_by_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from miscause.jobs.analysis.patterns.misclassification import AnalysisOptions

    checked = []
    real = AnalysisOptions.check
    monkeypatch.setattr(AnalysisOptions, "check", lambda self: checked.append(self) or real(self))
    out = tmp_path / "out"
    assert main(["analyze", "--predictions", str(write(tmp_path / "good.npz")), "--alpha", "0.1", "--out",
                 str(out)]) == 0
    assert len(checked) == 1 and checked[0].alpha == 0.1
    assert json.loads((out / "metrics.json").read_text())["settings"]["alpha"] == 0.1


def test_perfect_model_and_unpredicted_class_report(tmp_path: Path) -> None:
    labels = np.arange(200) % 4
    perfect = write(tmp_path / "perfect.npz", logits=np.eye(4, dtype=np.float32)[labels] * 5)
    never_truck = np.eye(4, dtype=np.float32)[np.where(labels == 3, 0, labels)] * 5
    lazy = write(tmp_path / "lazy.npz", logits=never_truck)
    out = tmp_path / "out"
    assert main(["analyze", "--predictions", str(perfect), str(lazy), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["models"]["perfect"]["accuracy"] == 1.0 and metrics["models"]["perfect"]["errors"] == 0
    assert metrics["models"]["lazy"]["errors"] == 50
    assert metrics["similarity"]["spearman"][0][1] is None
    truck_to_cat = next(p for p in metrics["pairs"] if (p["true"], p["pred"]) == ("truck", "cat"))
    # no replicate groups: the edge is there, whether it depends on the model is not tested
    assert truck_to_cat["models"] == ["lazy"] and truck_to_cat["cause"] == "undetermined"
    assert truck_to_cat["dependence"]["outcome"] == "not_tested"
    assert (out / "figures" / "network-perfect.png").stat().st_size > 0
    assert json.loads((out / "networks" / "model-perfect.json").read_text())["edges"] == []


def test_repository_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    repo, out = tmp_path / "repo", str(tmp_path / "out")
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "config.json").write_text("{not json")
    (repo / "bare" / "1").mkdir(parents=True)
    config = {"name": "bare", "architecture": "none", "input": {"shape": [3, 32, 32]}, "classes": list(CLASSES),
              "normalization": {"mean": [0.5] * 3, "std": [0.2] * 3}}
    (repo / "bare" / "config.json").write_text(json.dumps(config))
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "test").mkdir()
    base = ["analyze", "--repository", str(repo), "--data", str(data), "--out", out, "--models"]
    fails(capsys, base + ["absent"], "model 'absent' not found")
    fails(capsys, base + ["broken"], "config.json is not valid JSON")
    fails(capsys, base + ["bare"], "no model.pt2 in")
    fails(capsys, base + ["bare", "--erasure", "--saliency-method", "magic"], "saliency_method must be one of gradient")
    fails(capsys, base + ["bare", "--erasure", "--sweep-box", "1", "4"], "box must be an odd integer >= 1")
    # checked before any model is loaded or run
    fails(capsys, base + ["broken", "--replicates", "g=broken,absent"], "--replicates g: unknown model(s) absent")
    assert not Path(out).exists()
