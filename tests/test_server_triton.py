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
