"""train, evaluate and export end to end on a tiny image folder, and every bad input a user can give them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
import pytest
import torch

from miscause.cli import main
from miscause.jobs.training.checkpoint import load_checkpoint, load_model

TRAIN = ["train", "--arch", "cifarnet", "--batch-size", "16", "--seed", "3", "--no-progress", "--threads", "1"]


def cli(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tiny_folder, tmp_path_factory):
    """A cifarnet trained for four epochs on the tiny folder (with the validation split held out)."""
    out = tmp_path_factory.mktemp("run")
    assert cli(*TRAIN, "--data", tiny_folder, "--epochs", "4", "--out", out) == 0
    return out


def test_training_lowers_the_loss_and_logs_each_epoch(trained):
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert all("val_acc" in r for r in records)
    state = load_checkpoint(trained / "checkpoint.pt")
    assert state["epoch"] == 4 and state["classes"] == ["circle", "cross", "square"]


def test_existing_run_is_not_overwritten_without_resume(trained, tiny_folder, capsys):
    before = (trained / "checkpoint.pt").read_bytes()
    assert cli(*TRAIN, "--data", tiny_folder, "--epochs", "4", "--out", trained) == 2
    assert "--resume" in capsys.readouterr().err
    assert (trained / "checkpoint.pt").read_bytes() == before


def run_training(args: list, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "miscause", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(tiny_folder, tmp_path):
    args = [*TRAIN, "--batch-size", "8", "--data", tiny_folder, "--epochs", "3"]
    straight = tmp_path / "straight"
    assert cli(*args, "--out", straight) == 0

    killed = tmp_path / "killed"
    process = run_training([*args, "--out", killed])
    deadline = time.monotonic() + 120
    while not (killed / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "training ended before it could be killed mid-run"
    assert load_checkpoint(killed / "checkpoint.pt")["epoch"] < 3

    assert cli(*args, "--out", killed, "--resume") == 0
    expected, got = (load_checkpoint(p / "checkpoint.pt")["model"] for p in (straight, killed))
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_two_process_data_parallel_training_on_cpu(tiny_folder, tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "miscause", *TRAIN, "--data", str(tiny_folder), "--epochs", "2", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "world 2" in result.stdout
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 2
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_evaluate_writes_the_predictions_contract(trained, tiny_folder, tmp_path, capsys):
    out = tmp_path / "preds.npz"
    assert cli("evaluate", "--checkpoint", trained / "checkpoint.pt", "--data", tiny_folder,
               "--out", out, "--no-progress") == 0
    with np.load(out) as preds:
        assert preds["logits"].dtype == np.float32 and preds["logits"].shape == (48, 3)
        assert preds["labels"].dtype == np.int64 and preds["indices"].tolist() == list(range(48))
        assert preds["classes"].tolist() == ["circle", "cross", "square"]
        accuracy = float((preds["logits"].argmax(1) == preds["labels"]).mean())
    assert f"test accuracy {accuracy:.4f}" in capsys.readouterr().out


def test_export_matches_the_checkpoint_on_onnx_runtime(trained, tiny_folder, tmp_path):
    repo = tmp_path / "repo"
    assert cli("export", "--checkpoint", trained / "checkpoint.pt", "--repository", repo, "--name", "tiny",
               "--data", tiny_folder) == 0
    config = json.loads((repo / "tiny" / "config.json").read_text())
    assert config["classes"] == ["circle", "cross", "square"] and config["tta"] == "flip"
    model, _ = load_model(trained / "checkpoint.pt")
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        expected = ((model(images) + model(images.flip(-1))) / 2).numpy()
    session = ort.InferenceSession(str(repo / "tiny" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input": images.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    program = torch.export.load(str(repo / "tiny" / "1" / "model.pt2")).module()
    np.testing.assert_allclose(program(images).detach().numpy(), expected, atol=1e-4, rtol=1e-4)

    assert cli("evaluate", "--repository", repo, "--name", "tiny", "--data", tiny_folder,
               "--out", tmp_path / "served.npz", "--no-progress") == 0


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("miscause ") and "error:" in err[0], err
    return err[0]


def test_missing_dataset_path(tmp_path, capsys):
    assert cli(*TRAIN, "--data", tmp_path / "nowhere", "--out", tmp_path / "out") == 2
    assert "does not exist" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_malformed_dataset(tmp_path, capsys):
    (tmp_path / "data" / "pictures").mkdir(parents=True)
    assert cli(*TRAIN, "--data", tmp_path / "data", "--out", tmp_path / "out") == 2
    assert "image folder" in one_error_line(capsys)


def test_unknown_architecture(tiny_folder, tmp_path, capsys):
    assert cli("train", "--arch", "resnet5", "--data", tiny_folder, "--out", tmp_path / "out") == 2
    assert "unknown architecture" in one_error_line(capsys)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign"])
def test_bad_checkpoint(trained, tiny_folder, tmp_path, capsys, damage):
    bad = tmp_path / "bad.pt"
    if damage == "truncated":
        bad.write_bytes((trained / "checkpoint.pt").read_bytes()[:5000])
    elif damage == "garbage":
        bad.write_bytes(os.urandom(4096))
    else:
        torch.save({"weights": torch.zeros(3)}, bad)
    out = tmp_path / "preds.npz"
    assert cli("evaluate", "--checkpoint", bad, "--data", tiny_folder, "--out", out) == 2
    assert str(bad) in one_error_line(capsys)
    assert not out.exists()
    assert cli("export", "--checkpoint", bad, "--repository", tmp_path / "repo", "--name", "m") == 2
    one_error_line(capsys)
    assert not (tmp_path / "repo").exists()


def test_class_count_mismatch(trained, tmp_path, capsys):
    from conftest import make_image_folder

    two = make_image_folder(tmp_path / "two", classes=("a", "b"), per_class={"train": 4, "test": 4})
    out = tmp_path / "preds.npz"
    assert cli("evaluate", "--checkpoint", trained / "checkpoint.pt", "--data", two, "--out", out) == 2
    assert "classes" in one_error_line(capsys)
    assert not out.exists()

    state = load_checkpoint(trained / "checkpoint.pt")
    state["classes"] = state["classes"] + ["extra"]
    torch.save(state, tmp_path / "wrong.pt")
    assert cli("export", "--checkpoint", tmp_path / "wrong.pt", "--repository", tmp_path / "r", "--name", "m") == 2
    assert "do not fit" in one_error_line(capsys)
