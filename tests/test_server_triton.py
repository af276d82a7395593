"""NVIDIA's tritonclient.grpc, unmodified, against the server: metadata, inference, streaming.

tritonclient registers the same protobuf symbols (package `inference`) as `miscause.proto`, and one process
cannot hold both, so the client runs in its own interpreter and reports back as JSON.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from test_server_support import loopback, make_repository, normalise, random_images

from miscause import repository
from miscause.server.app import BackgroundServer

SCRIPT = r"""
import json, queue, sys
import numpy as np
import tritonclient.grpc as triton

client = triton.InferenceServerClient(sys.argv[1])
images = np.frombuffer(bytes.fromhex(sys.argv[2]), np.uint8).reshape(-1, 32, 32, 3)
report = {"live": client.is_server_live(), "ready": client.is_server_ready(),
          "model_ready": client.is_model_ready("alpha"),
          "server": client.get_server_metadata(as_json=True),
          "model": client.get_model_metadata("alpha", as_json=True)}

image = triton.InferInput("IMAGE", list(images.shape), "UINT8")
image.set_data_from_numpy(images)
wanted = [triton.InferRequestedOutput(name) for name in ("LABEL", "PROBS", "SALIENCY", "MASK")]
result = client.infer("alpha", [image], outputs=wanted, parameters={"top_percent": 10, "box": 3},
                      request_id="unary")
report["unary"] = {"id": result.get_response().id,
                   "label": result.as_numpy("LABEL").tolist(),
                   "probs_sum": result.as_numpy("PROBS").sum(axis=1).tolist(),
                   "saliency_shape": list(result.as_numpy("SALIENCY").shape),
                   "mask_dtype": str(result.as_numpy("MASK").dtype),
                   "mask_share": float(result.as_numpy("MASK").mean())}
try:
    client.infer("alpha", [image], parameters={"box": 4})
except triton.InferenceServerException as error:
    report["error"] = {"status": error.status(), "message": error.message()}
report["model_ready_missing"] = client.is_model_ready("missing")
report["config"] = client.get_model_config("alpha", as_json=True)["config"]
report["index"] = client.get_model_repository_index(as_json=True)
timed = client.infer("alpha", [image], outputs=[triton.InferRequestedOutput("LABEL")], priority=1,
                     timeout=30_000_000)
report["timed_label"] = timed.as_numpy("LABEL").tolist()
try:
    client.load_model("alpha")
except triton.InferenceServerException as error:
    report["load"] = {"status": error.status(), "message": error.message()}

answers = queue.Queue()
client.start_stream(callback=lambda result, error: answers.put((result, error)))
for number in range(3):
    one = triton.InferInput("IMAGE", [1, 32, 32, 3], "UINT8")
    one.set_data_from_numpy(images[number:number + 1])
    client.async_stream_infer("alpha", [one], request_id=f"stream-{number}",
                              outputs=[triton.InferRequestedOutput("LABEL")])
client.async_stream_infer("missing", [image], request_id="stream-bad")
stream = {}
for _ in range(4):
    result, error = answers.get(timeout=120)
    if error is not None:
        stream["error"] = str(error)
    else:
        stream[result.get_response().id] = result.as_numpy("LABEL").tolist()
client.stop_stream()
report["stream"] = stream
report["stats"] = client.get_inference_statistics("alpha", as_json=True)["model_stats"]
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    if importlib.util.find_spec("tritonclient") is None:  # found, not imported: it would clash (see above)
        pytest.skip("tritonclient[grpc] not installed")
    repo = make_repository(tmp_path_factory.mktemp("repo"), ("alpha",))
    images = random_images(4, seed=7)
    with BackgroundServer(loopback(repo)) as server:
        done = subprocess.run([sys.executable, "-c", SCRIPT, f"127.0.0.1:{server.grpc_port}", images.tobytes().hex()],
                              capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    config = repository.read_config(repo / "alpha")
    expected = repository.OnnxModel(repo / "alpha")(normalise(images, config)).argmax(1).tolist()
    return json.loads(done.stdout), expected


def test_tritonclient_health_and_metadata(report):
    got, _ = report
    assert got["live"] and got["ready"] and got["model_ready"]
    assert got["server"]["name"] == "miscause" and "streaming" in got["server"]["extensions"]
    assert got["model"]["inputs"] == [{"name": "IMAGE", "datatype": "UINT8", "shape": ["-1", "32", "32", "3"]}]
    assert [o["name"] for o in got["model"]["outputs"]] == ["LOGITS", "PROBS", "LABEL", "SALIENCY", "MASK",
                                                          "ERASED_LABEL", "ERASED_PROBS", "CORRECTED_LABEL"]


def test_tritonclient_infer(report):
    got, expected = report
    unary = got["unary"]
    assert unary["id"] == "unary" and unary["label"] == expected
    np.testing.assert_allclose(unary["probs_sum"], 1.0, rtol=1e-5)
    assert unary["saliency_shape"] == [4, 32, 32] and unary["mask_dtype"] == "bool"
    assert 0.1 <= unary["mask_share"] < 1.0
    assert got["error"]["status"] == "StatusCode.INVALID_ARGUMENT" and "odd integer" in got["error"]["message"]


def test_tritonclient_streaming(report):
    got, expected = report
    stream = got["stream"]
    assert {key: value for key, value in stream.items() if key != "error"} == {
        f"stream-{n}": [expected[n]] for n in range(3)}
    assert "unknown model 'missing'" in stream["error"]


def test_tritonclient_model_config_index_and_readiness(report):
    got, _ = report
    config = got["config"]
    assert config["name"] == "alpha" and config["platform"] == "onnxruntime_onnx"
    assert config["backend"] == "onnxruntime" and config["max_batch_size"] == 16
    assert config["input"] == [{"name": "IMAGE", "data_type": "TYPE_UINT8", "dims": ["32", "32", "3"]}]
    outputs = {o["name"]: (o["data_type"], o.get("dims", [])) for o in config["output"]}
    assert outputs["PROBS"] == ("TYPE_FP32", ["10"]) and outputs["MASK"] == ("TYPE_BOOL", ["32", "32"])
    assert outputs["LABEL"] == ("TYPE_INT64", [])  # one scalar per image
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == "2000"
    assert config["instance_group"] == [{"name": "alpha_0", "kind": "KIND_CPU", "count": 1}]
    assert got["index"]["models"] == [{"name": "alpha", "version": "1", "state": "READY"}]
    assert got["model_ready_missing"] is False


def test_tritonclient_timeout_priority_and_read_only_repository(report):
    got, expected = report
    assert got["timed_label"] == expected
    assert got["load"]["status"] == "StatusCode.UNAVAILABLE" and "read-only" in got["load"]["message"]


def test_tritonclient_statistics_count_what_ran(report):
    got, _ = report
    (stats,) = got["stats"]
    infer = stats["inference_stats"]
    # unary (4 images), the refused box=4 request, the timed one (4), three one-image stream requests
    assert infer["success"]["count"] == "5" and infer["fail"]["count"] == "1"
    assert stats["inference_count"] == str(4 + 4 + 3)
    assert int(stats["execution_count"]) >= 3 and int(stats["last_inference"]) > 0
    for stage in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert infer[stage]["count"] == "5" and int(infer[stage]["ns"]) > 0, stage
    batches = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats["batch_stats"]}
    assert sum(size * count for size, count in batches.items()) == 4 + 4 + 3
