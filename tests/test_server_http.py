"""The HTTP/REST front end: NVIDIA's tritonclient.http unmodified (JSON and binary tensors, metadata, config,
statistics, repository index), the same answers as gRPC, the token, the drain, and malformed requests sent raw,
each answered with a 4xx and a JSON error body."""

from __future__ import annotations

import http.client
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from test_server_support import WAIT, Gate, loopback, make_repository, normalise, random_images, sample

from miscause import repository
from miscause.client import InferenceClient
from miscause.server.app import BackgroundServer

triton = pytest.importorskip("tritonclient.http", reason="tritonclient[http] not installed")
TOKEN = "http-token-51aa"
LIMIT = 256 * 1024  # bytes a request may hold on the test server: room for 16 FP32 images, not for 64


SAMPLES = {"a.png": 21, "b.png": 22}  # alpha's sample set: name -> seed of its image


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = make_repository(tmp_path_factory.mktemp("repo"), ("alpha", "beta"))
    (root / "alpha" / "samples").mkdir()
    for name, seed in SAMPLES.items():
        Image.fromarray(random_images(1, seed=seed)[0]).save(root / "alpha" / "samples" / name)
    (root / "alpha" / "samples" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def server(repo):
    with BackgroundServer(loopback(repo, max_message_bytes=LIMIT)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    connected = triton.InferenceServerClient(f"127.0.0.1:{server.http_port}", network_timeout=300)
    yield connected
    connected.close()


def expected_labels(repo, images: np.ndarray) -> list[int]:
    config = repository.read_config(repo / "alpha")
    return repository.OnnxModel(repo / "alpha")(normalise(images, config)).argmax(1).tolist()


def raw(server, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, dict, str]:
    """(status, JSON body, content type) of one request sent with the standard library's HTTP client."""
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=300)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read()), response.getheader("Content-Type", "")
    finally:
        connection.close()


def test_health_metadata_config_and_index(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("alpha") and not client.is_model_ready("missing")
    server = client.get_server_metadata()
    assert server["name"] == "miscause" and "statistics" in server["extensions"]
    metadata = client.get_model_metadata("alpha")
    assert metadata["inputs"] == [{"name": "IMAGE", "datatype": "UINT8", "shape": [-1, 32, 32, 3]}]
    assert [o["name"] for o in metadata["outputs"]] == ["LOGITS", "PROBS", "LABEL", "SALIENCY", "MASK",
                                                        "ERASED_LABEL", "ERASED_PROBS", "CORRECTED_LABEL"]
    config = client.get_model_config("alpha")
    assert config["name"] == "alpha" and config["max_batch_size"] == 16 and config["backend"] == "onnxruntime"
    assert config["input"][0]["dims"] == [32, 32, 3] and config["input"][0]["data_type"] == "TYPE_UINT8"
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 2000
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    assert client.get_model_repository_index() == [{"name": "alpha", "version": "1", "state": "READY", "reason": ""},
                                                   {"name": "beta", "version": "1", "state": "READY", "reason": ""}]


def test_metadata_headers_carry_classes_and_defaults(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=300)
    connection.request("GET", "/v2/models/beta")
    response = connection.getresponse()
    response.read()
    connection.close()
    assert json.loads(response.getheader("miscause-classes"))[3] == "cat"
    defaults = json.loads(response.getheader("miscause-parameters"))
    assert defaults["top_percent"] == 10 and defaults["box"] == 5  # beta's policy


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_matches_grpc_and_in_process(server, client, repo, binary):
    images = random_images(5, seed=11)
    image = triton.InferInput("IMAGE", list(images.shape), "UINT8")
    image.set_data_from_numpy(images, binary_data=binary)
    wanted = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("LABEL", "PROBS", "SALIENCY",
                                                                                    "MASK")]
    result = client.infer("alpha", [image], outputs=wanted, parameters={"top_percent": 10, "box": 3},
                          request_id=f"rest-{binary}")
    assert result.get_response()["id"] == f"rest-{binary}"
    with InferenceClient(f"127.0.0.1:{server.grpc_port}") as grpc_client:
        over_grpc = grpc_client.infer("alpha", images, outputs=["LABEL", "PROBS", "SALIENCY", "MASK"],
                                      parameters={"top_percent": 10, "box": 3})
    assert result.as_numpy("LABEL").tolist() == over_grpc["LABEL"].tolist() == expected_labels(repo, images)
    np.testing.assert_allclose(result.as_numpy("PROBS"), over_grpc["PROBS"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.as_numpy("SALIENCY"), over_grpc["SALIENCY"], rtol=1e-4, atol=1e-6)
    assert result.as_numpy("MASK").dtype == np.bool_
    np.testing.assert_array_equal(result.as_numpy("MASK"), over_grpc["MASK"])


def test_infer_default_outputs_and_fp32(client, repo):
    images = random_images(3, seed=12)
    config = repository.read_config(repo / "alpha")
    pixels = triton.InferInput("IMAGE", [3, 32, 32, 3], "UINT8")
    pixels.set_data_from_numpy(images)
    result = client.infer("alpha", [pixels])  # no outputs named: LABEL and PROBS, binary by default
    assert result.as_numpy("LABEL").tolist() == expected_labels(repo, images)
    assert result.as_numpy("PROBS").shape == (3, 10)
    normalised = triton.InferInput("IMAGE", [3, 3, 32, 32], "FP32")
    normalised.set_data_from_numpy(normalise(images, config), binary_data=False)
    labels = client.infer("alpha", [normalised], outputs=[triton.InferRequestedOutput("LABEL", binary_data=False)])
    assert labels.as_numpy("LABEL").tolist() == expected_labels(repo, images)


def test_refusals_answer_with_status_and_message(client):
    image = triton.InferInput("IMAGE", [1, 32, 32, 3], "UINT8")
    image.set_data_from_numpy(random_images(1))
    with pytest.raises(triton.InferenceServerException) as error:
        client.infer("alpha", [image], parameters={"box": 4})
    assert error.value.status() == "400" and "odd integer" in error.value.message()
    with pytest.raises(triton.InferenceServerException) as error:
        client.infer("missing", [image])
    assert error.value.status() == "404" and "unknown model 'missing'" in error.value.message()
    with pytest.raises(triton.InferenceServerException) as error:
        client.load_model("alpha")
    assert error.value.status() == "503" and "read-only" in error.value.message()


def test_statistics_and_metrics_count_http_requests(server, client):
    before = sample(server, "miscause_inference_request_total", model="beta", status="OK")
    failed = sample(server, "miscause_inference_request_total", model="beta", status="INVALID_ARGUMENT")
    image = triton.InferInput("IMAGE", [2, 32, 32, 3], "UINT8")
    image.set_data_from_numpy(random_images(2, seed=13))
    client.infer("beta", [image], outputs=[triton.InferRequestedOutput("CORRECTED_LABEL")])
    with pytest.raises(triton.InferenceServerException):
        client.infer("beta", [image], parameters={"top_percent": 0})
    assert sample(server, "miscause_inference_request_total", model="beta", status="OK") == before + 1
    assert sample(server, "miscause_inference_request_total", model="beta", status="INVALID_ARGUMENT") == failed + 1
    (stats,) = client.get_inference_statistics("beta")["model_stats"]
    assert stats["name"] == "beta" and stats["inference_count"] >= 2 and stats["execution_count"] >= 1
    assert stats["inference_stats"]["success"]["count"] >= 1 and stats["inference_stats"]["fail"]["count"] >= 1
    assert isinstance(stats["inference_stats"]["queue"]["ns"], int)
    assert {s["name"] for s in client.get_inference_statistics()["model_stats"]} == {"alpha", "beta"}


def binary_request(images: np.ndarray, size: int | None = None) -> tuple[bytes, int]:
    header = json.dumps({"inputs": [{"name": "IMAGE", "datatype": "UINT8", "shape": list(images.shape),
                                     "parameters": {"binary_data_size": images.nbytes if size is None else size}}],
                         "outputs": [{"name": "LABEL"}]}).encode()
    return header + images.tobytes(), len(header)


def json_request(shape: list, data: object, datatype: str = "UINT8") -> bytes:
    return json.dumps({"inputs": [{"name": "IMAGE", "datatype": datatype, "shape": shape, "data": data}]}).encode()


def lying(size: int) -> tuple[bytes, dict]:
    """A binary request whose binary_data_size claims `size` bytes, with its true header length."""
    body, header = binary_request(IMAGES, size)
    return body, {"Inference-Header-Content-Length": str(header)}


IMAGES = random_images(2, seed=14)
BODY, HEADER = binary_request(IMAGES)
MALFORMED = {
    "not JSON": (b"\x00\xffnot json", {}, 400, "not JSON"),
    "JSON not an object": (b"[1, 2]", {}, 400, "JSON object"),
    "JSON nested too deeply": (b"[" * 100_000 + b"]" * 100_000, {}, 400, "nests too deeply"),
    "no inputs": (b"{}", {}, 400, "inputs"),
    "shape disagrees with data": (json_request([2, 32, 32, 3], [1, 2, 3]), {}, 400, "needs 6144 values"),
    "ragged data": (json_request([2, 1], [[1], [2, 3]]), {}, 400, "nested lists"),
    "strings as pixels": (json_request([1, 1], ["a"]), {}, 400, "integers"),
    "floats as UINT8": (json_request([1, 1], [0.5]), {}, 400, "integers"),
    "pixel out of range": (json_request([1, 32, 32, 3], [300] * 3072), {}, 400, "outside the range"),
    "negative shape": (json_request([-1, 32, 32, 3], []), {}, 400, "shape"),
    "unknown datatype": (json_request([1, 32, 32, 3], [0] * 3072, "BF17"), {}, 400, "datatype"),
    "header length past the body": (BODY, {"Inference-Header-Content-Length": str(len(BODY) + 1)}, 400,
                                     "Inference-Header-Content-Length"),
    "header length not a number": (BODY, {"Inference-Header-Content-Length": "12ab"}, 400, "integer"),
    "header length cuts the JSON": (BODY, {"Inference-Header-Content-Length": str(HEADER - 5)}, 400, "not JSON"),
    "binary size past the body": (*lying(IMAGES.nbytes + 1), 400, "runs past"),
    "binary bytes left over": (*lying(IMAGES.nbytes - 3), 400, "binary bytes"),
    "oversized body": (b"{" + b" " * (2 * LIMIT) + b"}", {}, 413, "body size"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_infer_gets_4xx_with_json_error(server, case):
    body, headers, status, words = MALFORMED[case]
    def refused() -> float:  # bodies that do not decode count without a model, bad tensors under theirs
        return sum(sample(server, "miscause_inference_request_total", model=model, status="INVALID_ARGUMENT")
                   for model in ("", "alpha"))

    before = refused()
    got, answer, content_type = raw(server, "POST", "/v2/models/alpha/infer", body, headers)
    assert got == status, answer
    assert content_type.startswith("application/json") and words in answer["error"]
    assert refused() == before + (status == 400)


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/v2/no/such/route", 404), ("GET", "/v2/models/alpha/infer", 405), ("GET", "/v2/models/missing", 404),
    ("GET", "/v2/models/alpha/versions/7/config", 404), ("POST", "/v2/repository/index", 200)])
def test_routes_answer_json(server, method, path, status):
    got, answer, content_type = raw(server, method, path, b"{\"ready\": true}" if method == "POST" else b"")
    assert got == status and content_type.startswith("application/json")
    assert "error" in answer if status >= 400 else answer[0]["state"] == "READY"


def test_a_well_formed_binary_request_is_answered(server, repo):
    got, answer, _ = raw(server, "POST", "/v2/models/alpha/versions/1/infer", BODY,
                         {"Inference-Header-Content-Length": str(HEADER)})
    assert got == 200 and answer["outputs"][0]["data"] == expected_labels(repo, IMAGES)


def test_token_is_required_except_for_health_and_page(repo):
    with BackgroundServer(loopback(repo, token=TOKEN)) as server:
        assert raw(server, "GET", "/v2/health/ready")[0] == 200
        page = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=300)
        page.request("GET", "/")
        assert page.getresponse().status == 200
        page.close()
        for headers, reason in (({}, "missing bearer token"), ({"Authorization": "Bearer nope"}, "invalid")):
            got, answer, _ = raw(server, "POST", "/v2/models/alpha/infer", BODY,
                                 {**headers, "Inference-Header-Content-Length": str(HEADER)})
            assert got == 401 and reason in answer["error"]
        authorised = triton.InferenceServerClient(f"127.0.0.1:{server.http_port}", network_timeout=300)
        image = triton.InferInput("IMAGE", [1, 32, 32, 3], "UINT8")
        image.set_data_from_numpy(random_images(1))
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert authorised.infer("alpha", [image], headers=headers).as_numpy("LABEL").shape == (1,)
        assert authorised.get_model_metadata("alpha", headers=headers)["name"] == "alpha"
        authorised.close()


def test_drain_refuses_http_like_grpc(repo):
    with BackgroundServer(loopback(repo)) as server:
        server.service.announce_drain()
        assert raw(server, "GET", "/v2/health/ready")[0] == 503
        assert raw(server, "GET", "/v2/health/live")[0] == 200
        server.engine.admission.close()
        got, answer, _ = raw(server, "POST", "/v2/models/alpha/infer", BODY,
                             {"Inference-Header-Content-Length": str(HEADER)})
        assert got == 503 and "shutting down" in answer["error"]
        assert sample(server, "miscause_inference_request_total", model="alpha", status="UNAVAILABLE") == 1


def test_requests_past_the_cap_get_429(repo):
    with BackgroundServer(loopback(repo, max_concurrent_rpcs=1)) as server:
        with Gate(server, "alpha") as gate, ThreadPoolExecutor(1) as pool:
            held = pool.submit(raw, server, "POST", "/v2/models/alpha/infer", BODY,
                               {"Inference-Header-Content-Length": str(HEADER)})
            assert gate.entered.wait(WAIT)
            got, answer, _ = raw(server, "GET", "/v2/models/alpha")
            gate.opened.set()
            assert held.result(WAIT)[0] == 200
        assert got == 429 and "at most 1" in answer["error"]


def test_sample_set_is_listed_and_served_and_nothing_else(server, repo):
    assert raw(server, "GET", "/samples/alpha")[1] == sorted(SAMPLES)
    assert raw(server, "GET", "/samples/beta")[1] == []
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=300)
    connection.request("GET", "/samples/alpha/a.png")
    response = connection.getresponse()
    assert response.status == 200 and response.read() == (repo / "alpha" / "samples" / "a.png").read_bytes()
    connection.close()
    for path in ("/samples/alpha/notes.txt", "/samples/alpha/..%2Fconfig.json", "/samples/missing"):
        got, answer, _ = raw(server, "GET", path)
        assert got == 404 and "error" in answer
