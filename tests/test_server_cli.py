"""`miscause serve` as a process: it prints where it listens, serves metrics, and drains on SIGTERM
(accepted requests finish, new ones are refused, exit status 0)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request

import grpc
import pytest
from test_server_support import make_repository, random_images, wait_until

from miscause.client.api import infer_outputs, infer_request
from miscause.proto import grpc_service_pb2_grpc as pb_grpc

LISTENING = re.compile(r"grpc://127\.0\.0\.1:(\d+), http://127\.0\.0\.1:\d+, metrics http://127\.0\.0\.1:(\d+)/metrics")


def metric(metrics_port: int, name: str) -> float:
    """One sample of model alpha from the served /metrics page (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf'^{name}\{{model="alpha"\}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def served(tmp_path):
    repo = make_repository(tmp_path / "repo", ("alpha",))
    command = [sys.executable, "-m", "miscause", "serve", "--model-repository", str(repo), "--host", "127.0.0.1",
               "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0", "--max-batch-size", "8",
               "--max-queue-delay-us", "15000000", "--threads", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    errors: list[str] = []
    threading.Thread(target=lambda: errors.extend(process.stderr), daemon=True).start()
    line = process.stdout.readline()
    match = LISTENING.search(line)
    if match is None:
        process.kill()
        pytest.fail(f"server did not start: {line!r} {''.join(errors)[-2000:]}")
    yield process, int(match.group(1)), int(match.group(2)), errors
    if process.poll() is None:
        process.kill()
        process.wait(30)


def test_sigterm_drains_accepted_requests_and_exits_zero(served):
    process, grpc_port, metrics_port, errors = served
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        # a slow batch (SmoothGrad over eight images) keeps the one instance busy while three more queue up;
        # the three are sent once it runs, so none of them can reach the idle instance first
        blocker = stub.ModelInfer.future(infer_request("alpha", random_images(8), ["SALIENCY"],
                                                       {"saliency_method": "smoothgrad"}), timeout=120)
        wait_until(lambda: metric(metrics_port, "miscause_inference_queue_duration_seconds_count") == 1)
        calls = [stub.ModelInfer.future(infer_request("alpha", random_images(1, seed=n)), timeout=120)
                 for n in range(3)]
        wait_until(lambda: metric(metrics_port, "miscause_inference_queue_depth") == 3)  # accepted, queued
        process.send_signal(signal.SIGTERM)
        results = [infer_outputs(call.result(timeout=120)) for call in [blocker, *calls]]
        assert process.wait(timeout=120) == 0
    assert [r["LABEL"].shape for r in results[1:]] == [(1,)] * 3 and results[0]["SALIENCY"].shape == (8, 32, 32)
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        with pytest.raises(grpc.RpcError) as error:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(infer_request("alpha", random_images(1)),
                                                                timeout=10)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    logged = "".join(errors)
    assert '"message": "draining"' in logged and '"message": "stopped"' in logged


def test_help_shows_a_worked_example():
    done = subprocess.run([sys.executable, "-m", "miscause", "serve", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0
    assert "example:" in done.stdout and "--model-repository" in done.stdout and "--token-file" in done.stdout


def test_missing_repository_is_one_line_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "miscause", "serve", "--model-repository", str(tmp_path / "no"),
                           "--grpc-port", "0", "--metrics-port", "-1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "model repository not found" in done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("flag", ["--drain-seconds", "--drain-notice-seconds"])
def test_negative_drain_time_is_one_clear_line(tmp_path, flag):
    result = subprocess.run([sys.executable, "-m", "miscause", "serve", "--model-repository", str(tmp_path), flag,
                             "-1"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "miscause serve: error: --drain-seconds and --drain-notice-seconds must not be negative"], result.stderr
