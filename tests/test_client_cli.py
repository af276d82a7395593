"""The client: `miscause client infer` on image files and folders, the asyncio API, and its dependencies
(the protocol only, never the server or the jobs)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from test_server_support import loopback, make_repository, random_images

from miscause.cli import main
from miscause.client import AsyncInferenceClient, InferenceClient
from miscause.server.app import BackgroundServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = make_repository(tmp_path_factory.mktemp("repo"), ("alpha",))
    with BackgroundServer(loopback(repo)) as running:
        yield running


@pytest.fixture
def pictures(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    images = random_images(3, seed=5)
    Image.fromarray(images[0]).save(folder / "a.png")
    Image.fromarray(images[1]).save(folder / "b.jpg", quality=95)
    Image.fromarray(images[2]).resize((48, 40)).save(tmp_path / "large.png")
    return folder, tmp_path / "large.png"


def test_infer_prints_a_table_and_writes_overlays(server, pictures, tmp_path, capsys):
    folder, large = pictures
    out = tmp_path / "out"
    status = main(["client", "infer", str(folder), str(large), "--server", f"127.0.0.1:{server.grpc_port}",
                   "--model", "alpha", "--explain", "--erase", "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 0
    assert "large.png is 40x48, resized to 32x32" in captured.err
    lines = captured.out.splitlines()
    assert lines[0].split() == ["image", "label", "confidence", "erased", "label", "corrected", "label"]
    rows = lines[1:4]
    assert [row.split()[0] for row in rows] == [str(folder / "a.png"), str(folder / "b.jpg"), str(large)]
    with InferenceClient(f"127.0.0.1:{server.grpc_port}") as client:
        classes = client.model_metadata("alpha")["classes"]
        expected = client.infer("alpha", np.asarray(Image.open(folder / "a.png"))[None])
    assert rows[0].split()[1] in classes
    assert rows[0].split()[1] == classes[int(expected["LABEL"][0])]
    assert sorted(p.name for p in out.iterdir()) == [
        "0000-a.erased.png", "0000-a.saliency.png", "0001-b.erased.png", "0001-b.saliency.png",
        "0002-large.erased.png", "0002-large.saliency.png"]
    assert Image.open(out / "0000-a.saliency.png").size == (128, 128)
    assert lines[-1] == f"wrote 6 images to {out}"


def test_infer_reports_user_errors_in_one_line(server, tmp_path, capsys):
    target = f"127.0.0.1:{server.grpc_port}"
    assert main(["client", "infer", str(tmp_path / "missing.png"), "--server", target]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    Image.fromarray(random_images(1)[0]).save(tmp_path / "a.png")
    assert main(["client", "infer", str(tmp_path / "a.png"), "--server", target, "--model", "nope"]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err
    assert main(["client", "infer", str(tmp_path / "a.png"), "--server", target, "--explain"]) == 2
    assert "give --out" in capsys.readouterr().err


def test_help_shows_a_worked_example():
    done = subprocess.run([sys.executable, "-m", "miscause", "client", "infer", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0
    assert "example:" in done.stdout and "--server localhost:8001 --explain --erase --out" in done.stdout


def test_async_client_matches_blocking_client(server):
    images = random_images(4, seed=9)
    target = f"127.0.0.1:{server.grpc_port}"

    async def ask() -> tuple[bool, dict, list[dict]]:
        async with AsyncInferenceClient(target) as client:
            ready = await client.model_ready("alpha")
            metadata = await client.model_metadata("alpha")
            answers = await asyncio.gather(*(client.infer("alpha", images[i:i + 1], ["LABEL", "PROBS"])
                                             for i in range(4)))
        return ready, metadata, answers

    ready, metadata, answers = asyncio.run(ask())
    with InferenceClient(target) as client:
        expected = client.infer("alpha", images, ["LABEL", "PROBS"])
    assert ready and metadata["name"] == "alpha" and metadata["parameters"]["box"] == 3
    np.testing.assert_array_equal(np.concatenate([a["LABEL"] for a in answers]), expected["LABEL"])
    np.testing.assert_allclose(np.concatenate([a["PROBS"] for a in answers]), expected["PROBS"], rtol=1e-5)


def test_client_imports_only_the_protocol():
    code = ("import sys, miscause.client, miscause.client.cli; "
            "bad = sorted(m for m in sys.modules if m.startswith(('miscause.server', 'miscause.jobs', "
            "'miscause.kernels', 'torch', 'onnxruntime'))); print(bad); sys.exit(bool(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
