"""The service over gRPC on loopback: outputs against the in-process computation, encodings, validation,
batching, overload, deadlines, cancellation, health, reflection and metrics."""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from test_server_support import WAIT, Gate, loopback, make_repository, normalise, random_images, sample, wait_until

from miscause import kernels, repository
from miscause.client import InferenceClient
from miscause.client.api import infer_request
from miscause.proto import grpc_service_pb2 as pb
from miscause.proto import grpc_service_pb2_grpc as pb_grpc
from miscause.server.app import BackgroundServer

ALL_OUTPUTS = ["LOGITS", "PROBS", "LABEL", "SALIENCY", "MASK", "ERASED_LABEL", "ERASED_PROBS", "CORRECTED_LABEL"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_repository(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="module")
def server(repo):
    with BackgroundServer(loopback(repo)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with InferenceClient(f"127.0.0.1:{server.grpc_port}") as connected:
        yield connected


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def expected_outputs(model_dir, images: np.ndarray, top_percent: float, box: int, policy_applies: bool) -> dict:
    """Every output computed in-process: ONNX Runtime, the torch program's saliency, the erasure op."""
    config = repository.read_config(model_dir)
    onnx = repository.OnnxModel(model_dir)
    x = normalise(images, config)
    logits = onnx(x)
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    labels = probs.argmax(1)
    program = repository.load_program(model_dir, "cpu")
    saliency, _ = kernels.saliency(program, torch.from_numpy(x), method="gradient", target=torch.from_numpy(labels))
    erased, mask = kernels.erase(torch.from_numpy(x), saliency, top_percent, box, None)
    erased_probs = torch.softmax(torch.from_numpy(onnx(erased.numpy())), 1).numpy()
    erased_labels = erased_probs.argmax(1)
    return {"LOGITS": logits, "PROBS": probs, "LABEL": labels, "SALIENCY": saliency.numpy(), "MASK": mask.numpy(),
            "ERASED_LABEL": erased_labels, "ERASED_PROBS": erased_probs,
            "CORRECTED_LABEL": erased_labels if policy_applies else labels}


def assert_outputs_match(got: dict, expected: dict) -> None:
    for name in ("LOGITS", "PROBS", "SALIENCY", "ERASED_PROBS"):
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-5, err_msg=name)
    for name in ("LABEL", "MASK", "ERASED_LABEL", "CORRECTED_LABEL"):
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_health_readiness_and_metadata(client, server):
    assert client.live() and client.ready()
    assert client.model_ready("alpha") and client.model_ready("beta")
    assert client.server_metadata()["name"] == "miscause"
    meta = client.model_metadata("beta")
    assert meta["inputs"] == [{"name": "IMAGE", "datatype": "UINT8", "shape": [-1, 32, 32, 3]}]
    shapes = {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]}
    assert shapes["SALIENCY"] == ("FP32", [-1, 32, 32]) and shapes["MASK"] == ("BOOL", [-1, 32, 32])
    assert shapes["LABEL"] == ("INT64", [-1]) and shapes["PROBS"] == ("FP32", [-1, 10])
    assert meta["parameters"] == {"top_percent": 10.0, "box": 5, "fill": [0.0, 0.0, 0.0],
                                  "saliency_method": "gradient", "target": None}
    assert client.model_metadata("alpha")["parameters"]["top_percent"] == 5.0
    assert len(meta["classes"]) == 10
    with pytest.raises(grpc.RpcError) as error:
        client.model_metadata("nope")
    assert error.value.code() == grpc.StatusCode.NOT_FOUND and "nope" in error.value.details()


def test_health_service_and_reflection(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        services = {s.name for s in next(answers).list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services


def test_every_output_matches_in_process_computation(client, repo):
    images = random_images(5, seed=1)
    got = client.infer("alpha", images, ALL_OUTPUTS, {"top_percent": 7.5, "box": 3})
    assert list(got) == ALL_OUTPUTS
    assert_outputs_match(got, expected_outputs(repo / "alpha", images, 7.5, 3, policy_applies=False))


def test_policy_defaults_and_corrected_label(client, repo):
    images = random_images(4, seed=2)
    got = client.infer("beta", images, ALL_OUTPUTS)
    assert_outputs_match(got, expected_outputs(repo / "beta", images, 10, 5, policy_applies=True))
    only = client.infer("beta", images, ["CORRECTED_LABEL"])
    np.testing.assert_array_equal(only["CORRECTED_LABEL"], got["ERASED_LABEL"])


def test_default_outputs_are_label_and_probs(client):
    got = client.infer("alpha", random_images(2))
    assert list(got) == ["LABEL", "PROBS"]
    assert got["LABEL"].dtype == np.int64 and got["PROBS"].shape == (2, 10)


def test_raw_typed_and_float_inputs_agree(client, stub, repo):
    images = random_images(3, seed=3)
    raw = client.infer("alpha", images, ["LOGITS"])["LOGITS"]
    request = pb.ModelInferRequest(model_name="alpha", outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(
        name="LOGITS")])
    tensor = request.inputs.add(name="IMAGE", datatype="UINT8", shape=list(images.shape))
    tensor.contents.uint_contents.extend(images.ravel().tolist())
    typed = np.frombuffer(stub.ModelInfer(request).raw_output_contents[0], np.float32).reshape(3, 10)
    floats = client.infer("alpha", normalise(images, repository.read_config(repo / "alpha")), ["LOGITS"])["LOGITS"]
    np.testing.assert_allclose(typed, raw, rtol=1e-6)
    np.testing.assert_allclose(floats, raw, rtol=1e-4, atol=1e-5)


def _request(**changes) -> pb.ModelInferRequest:
    images = changes.pop("images", random_images(2))
    request = infer_request(changes.pop("model", "alpha"), images, changes.pop("outputs", None),
                            changes.pop("parameters", None))
    for key, value in changes.items():
        if key == "raw":
            request.raw_input_contents[0] = value
        elif key == "datatype":
            request.inputs[0].datatype = value
        elif key == "shape":
            del request.inputs[0].shape[:]
            request.inputs[0].shape.extend(value)
        elif key == "name":
            request.inputs[0].name = value
        elif key == "version":
            request.model_version = value
    return request


NAN_IMAGES = np.full((1, 3, 32, 32), np.nan, dtype=np.float32)
BAD_REQUESTS = {
    "unknown model": (_request(model="nope"), grpc.StatusCode.NOT_FOUND, "unknown model 'nope'"),
    "unknown version": (_request(version="7"), grpc.StatusCode.NOT_FOUND, "no version '7'"),
    "datatype": (_request(datatype="INT32"), grpc.StatusCode.INVALID_ARGUMENT, "datatype must be UINT8"),
    "rank": (_request(shape=[2, 32, 96]), grpc.StatusCode.INVALID_ARGUMENT, "rank 4"),
    "byte length": (_request(raw=b"\0" * 100), grpc.StatusCode.INVALID_ARGUMENT, "needs 6144 bytes, got 100"),
    "channels": (_request(images=random_images(1)[..., :1].copy(), shape=[1, 32, 32, 1]),
                 grpc.StatusCode.INVALID_ARGUMENT, "3 channels"),
    "image size": (_request(images=random_images(1, size=16)), grpc.StatusCode.INVALID_ARGUMENT, "takes 32x32"),
    "image side": (_request(images=np.zeros((1, 5000, 1, 3), np.uint8)), grpc.StatusCode.INVALID_ARGUMENT,
                   "max image side"),
    "batch size": (_request(images=random_images(17)), grpc.StatusCode.INVALID_ARGUMENT, "batch size must lie"),
    "nan": (_request(images=NAN_IMAGES), grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
    "input name": (_request(name="PIXELS"), grpc.StatusCode.INVALID_ARGUMENT, "one input named IMAGE"),
    "output": (_request(outputs=["HEATMAP"]), grpc.StatusCode.INVALID_ARGUMENT, "unknown output 'HEATMAP'"),
    "parameter": (_request(parameters={"colour": "red"}), grpc.StatusCode.INVALID_ARGUMENT, "unknown parameter"),
    "top_percent": (_request(parameters={"top_percent": 0}), grpc.StatusCode.INVALID_ARGUMENT, "top_percent"),
    "box even": (_request(parameters={"box": 4}), grpc.StatusCode.INVALID_ARGUMENT, "odd integer"),
    "box large": (_request(parameters={"box": 99}), grpc.StatusCode.INVALID_ARGUMENT, "odd integer in 1..32"),
    "fill": (_request(parameters={"fill": "1,2"}), grpc.StatusCode.INVALID_ARGUMENT, "1 or 3 values"),
    "method": (_request(parameters={"saliency_method": "lime"}), grpc.StatusCode.INVALID_ARGUMENT, "lime"),
    "target": (_request(parameters={"target": 10}), grpc.StatusCode.INVALID_ARGUMENT, "target must lie in 0..9"),
    "target name": (_request(parameters={"target": "unicorn"}), grpc.StatusCode.INVALID_ARGUMENT, "unicorn"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_is_refused_with_a_reason(stub, case):
    request, code, message = BAD_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request, timeout=WAIT)
    assert error.value.code() == code
    assert message in error.value.details()


def test_failing_request_does_not_poison_its_batch(server, client, stub, monkeypatch):
    """A request that passes validation but breaks a stage fails alone; the rest of its batch succeeds."""
    backend = server.engine.models["alpha"].backend
    original = backend.erase

    def erase(images, ranking, top_percent, box, fill, from_gradient):
        if top_percent == 42:
            raise ValueError("erasure refused this request")
        return original(images, ranking, top_percent, box, fill, from_gradient)

    monkeypatch.setattr(backend, "erase", erase)
    good = [random_images(1, seed=10 + i) for i in range(3)]
    with Gate(server, "alpha") as gate, ThreadPoolExecutor(8) as pool:
        blocker = pool.submit(client.infer, "alpha", random_images(1), ["LABEL"])
        gate.entered.wait(WAIT)
        futures = [pool.submit(client.infer, "alpha", g, ["MASK", "LABEL"]) for g in good]
        bad = pool.submit(client.infer, "alpha", random_images(1), ["MASK"], {"top_percent": 42})
        invalid = pool.submit(stub.ModelInfer, BAD_REQUESTS["nan"][0])
        wait_until(lambda: sample(server, "miscause_inference_queue_depth", model="alpha") == 4)
        gate.opened.set()
        results = [f.result(WAIT) for f in futures]
        blocker.result(WAIT)
        with pytest.raises(grpc.RpcError) as failed:
            bad.result(WAIT)
        with pytest.raises(grpc.RpcError) as refused:
            invalid.result(WAIT)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "refused" in failed.value.details()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(gate.ran) == 5  # the blocker, then the three good and the failing one in one batch
    for images, result in zip(good, results, strict=True):
        np.testing.assert_array_equal(result["LABEL"], client.infer("alpha", images, ["LABEL"])["LABEL"])
        assert result["MASK"].shape == (1, 32, 32)


def test_many_clients_are_coalesced_into_batches(server, client, repo):
    before_count = sample(server, "miscause_inference_batch_size_count", model="alpha")
    before_sum = sample(server, "miscause_inference_batch_size_sum", model="alpha")
    images = [random_images(1, seed=100 + i) for i in range(24)]
    with Gate(server, "alpha") as gate, ThreadPoolExecutor(24) as pool:
        first = pool.submit(client.infer, "alpha", images[0], ["LABEL"])
        gate.entered.wait(WAIT)
        rest = [pool.submit(client.infer, "alpha", image, ["LABEL"]) for image in images[1:]]
        wait_until(lambda: sample(server, "miscause_inference_queue_depth", model="alpha") == 23)
        gate.opened.set()
        labels = [first.result(WAIT)["LABEL"]] + [f.result(WAIT)["LABEL"] for f in rest]
    batches = sample(server, "miscause_inference_batch_size_count", model="alpha") - before_count
    served = sample(server, "miscause_inference_batch_size_sum", model="alpha") - before_sum
    assert served == 24 and batches == 3  # 1 alone while the gate held, then 16 (the max) and 7
    batch = np.concatenate(images)
    expected = repository.OnnxModel(repo / "alpha")(normalise(batch, repository.read_config(repo / "alpha")))
    np.testing.assert_array_equal(np.concatenate(labels), expected.argmax(1))


def test_overload_answers_resource_exhausted(server, client, monkeypatch):
    batcher = server.engine.models["alpha"].batcher
    monkeypatch.setattr(batcher, "batching", replace(batcher.batching, max_queue_size=3))
    with Gate(server, "alpha") as gate, ThreadPoolExecutor(8) as pool:
        running = pool.submit(client.infer, "alpha", random_images(1))
        gate.entered.wait(WAIT)
        queued = [pool.submit(client.infer, "alpha", random_images(1)) for _ in range(3)]
        wait_until(lambda: sample(server, "miscause_inference_queue_depth", model="alpha") == 3)
        with pytest.raises(grpc.RpcError) as error:
            client.infer("alpha", random_images(1))
        gate.opened.set()
        assert all(f.result(WAIT)["LABEL"].shape == (1,) for f in [running, *queued])
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue full" in error.value.details()
    assert sample(server, "miscause_inference_request_total", model="alpha", status="RESOURCE_EXHAUSTED") >= 1


def test_expired_deadline_never_runs(server, client):
    with Gate(server, "alpha") as gate, ThreadPoolExecutor(2) as pool:
        running = pool.submit(client.infer, "alpha", random_images(1))
        gate.entered.wait(WAIT)
        with pytest.raises(grpc.RpcError) as error:
            client.infer("alpha", random_images(3), timeout=0.3)
        gate.opened.set()
        running.result(WAIT)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: sample(server, "miscause_inference_queue_depth", model="alpha") == 0)
    assert [work.count for work in gate.ran] == [1]


def test_cancelled_request_frees_its_slot_and_never_runs(server, client, stub):
    with Gate(server, "alpha") as gate, ThreadPoolExecutor(2) as pool:
        running = pool.submit(client.infer, "alpha", random_images(1))
        gate.entered.wait(WAIT)
        call = stub.ModelInfer.future(infer_request("alpha", random_images(3)), timeout=60)
        wait_until(lambda: sample(server, "miscause_inference_queue_depth", model="alpha") == 1)
        call.cancel()
        wait_until(lambda: sample(server, "miscause_inference_queue_depth", model="alpha") == 0)
        gate.opened.set()
        running.result(WAIT)
    assert call.cancelled()
    assert [work.count for work in gate.ran] == [1]


def test_label_accuracy_on_cifar10_test_images(client, repo, cifar10_root):
    from miscause.jobs.training.data import load_split

    split = load_split(cifar10_root, "test")
    index = np.random.default_rng(0).permutation(len(split))[:256]
    images, truth = split.images[index], split.labels[index]
    served = np.concatenate([client.infer("alpha", images[i:i + 16], ["LABEL"])["LABEL"]
                             for i in range(0, len(images), 16)])
    config = repository.read_config(repo / "alpha")
    in_process = repository.OnnxModel(repo / "alpha")(normalise(images, config)).argmax(1)
    np.testing.assert_array_equal(served, in_process)
    assert (served == truth).mean() > 0.5


def test_metrics_endpoint_exposes_the_service_metrics(server, client):
    client.infer("alpha", random_images(1))
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    for name in ("miscause_inference_request_total", "miscause_inference_count_total",
                 "miscause_inference_exec_count_total", "miscause_inference_queue_duration_seconds_bucket",
                 "miscause_inference_compute_duration_seconds_bucket", "miscause_inference_batch_size_bucket",
                 "miscause_inference_request_duration_seconds_bucket", "miscause_inference_queue_depth",
                 "miscause_model_ready"):
        assert name in text, name
    assert 'miscause_inference_request_total{model="alpha",status="OK"}' in text
