"""Property-based fuzzing of the request decoder: arbitrary datatypes, shapes, byte lengths, contents, outputs
and parameters get a clean error status or a correct answer; no exception escapes the handler.

Requests are drawn near the valid one (each field valid or arbitrary by turns), so both the answered and
the refused paths are explored; the model is served by an in-process server on loopback.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_load_support import Oracle, first_model, served_repository

from miscause.client.api import infer_outputs
from miscause.proto import grpc_service_pb2 as pb
from miscause.proto import grpc_service_pb2_grpc as pb_grpc
from miscause.proto import tensors
from miscause.proto.names import DEFAULT_OUTPUTS, INPUT, OUTPUTS
from miscause.server import protocol
from miscause.server.app import BackgroundServer, Server
from miscause.server.parameters import NAMES
from miscause.server.settings import Batching, Settings

MAX_BATCH = 4
REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclass
class Served:
    server: Server
    channel: grpc.Channel
    stub: pb_grpc.GRPCInferenceServiceStub
    name: str
    height: int
    width: int
    oracle: Oracle


@pytest.fixture(scope="module")
def served():
    root = served_repository()
    name, config = first_model(root)
    height, width = config.height, config.width
    options = Settings(model_repository=root, host="127.0.0.1", grpc_port=0, http_port=None, metrics_port=None,
                       threads=1, max_image_side=64,
                       batching=Batching(max_batch_size=MAX_BATCH, max_queue_delay_us=0, max_queue_size=16))
    with BackgroundServer(options) as server, grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield Served(server, channel, pb_grpc.GRPCInferenceServiceStub(channel), name, height, width,
                     Oracle(root / name))


def pixel_array(datatype: str, shape: list[int], seed: int, poison: str) -> np.ndarray:
    """Seeded values of `datatype` in `shape` (elements capped), with NaN/Inf/huge values where `poison` says."""
    dtype = tensors.DTYPES[datatype]
    full = tensors.element_count(shape) if all(d >= 0 for d in shape) else -1
    count = min(max(full, 0), 1 << 16)
    rng = np.random.default_rng(seed)
    if dtype.kind == "f":
        values = rng.normal(0, 2, count).astype(dtype)
        if count and poison != "none":
            values[rng.integers(count)] = {"nan": np.nan, "inf": np.inf, "huge": 3e38}[poison]
    elif dtype.kind == "b":
        values = rng.integers(0, 2, count).astype(dtype)
    else:
        info = np.iinfo(dtype)
        values = rng.integers(max(info.min, -1000), min(info.max, 1000) + 1, count).astype(dtype)
    return values.reshape(shape) if count == full else values


FIELDS = ("model", "version", "datatype", "batch", "shape", "inputs", "input_parameters", "encoding", "values",
          "extra_raw", "outputs", "output_parameters", "parameters")
ANY_VALUE = st.booleans() | st.integers(-5, 40) | st.floats(allow_nan=True, allow_infinity=True) \
    | st.text(max_size=12) | st.sampled_from(["gradient", "smoothgrad", "input_x_gradient", "cat"])


def valid_parameters(height: int, width: int, classes: int) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({}, optional={
        "top_percent": st.floats(0.5, 100),
        "box": st.integers(0, (min(height, width) - 1) // 2).map(lambda k: 2 * k + 1),
        "fill": st.floats(-3, 3), "saliency_method": st.sampled_from(["gradient", "input_x_gradient"]),
        "target": st.integers(0, classes - 1)})


@st.composite
def infer_requests(draw, model: str, height: int, width: int, classes: int = 10) -> pb.ModelInferRequest:
    """A ModelInferRequest valid but for a few fields drawn at random (often none, so many are answered)."""
    broken = draw(st.sets(st.sampled_from(FIELDS), max_size=3))

    def pick(field: str, valid: st.SearchStrategy, arbitrary: st.SearchStrategy):
        return draw(arbitrary if field in broken else valid)

    datatype = pick("datatype", st.sampled_from(["UINT8", "FP32"]),
                    st.sampled_from(sorted(tensors.DTYPES)) | st.sampled_from(["BYTES", "", "uint8", "FP8"]))
    n = pick("batch", st.integers(1, MAX_BATCH), st.sampled_from([-1, 0, MAX_BATCH + 1, 1 << 31]))
    valid_shape = [n, height, width, 3] if datatype != "FP32" else [n, 3, height, width]
    shape = pick("shape", st.just(valid_shape), st.lists(st.integers(-2, 40), max_size=6)
                 | st.builds(lambda i, d: [*valid_shape[:i], d, *valid_shape[i + 1:]], st.integers(0, 3),
                             st.integers(-1, 66)))
    request = pb.ModelInferRequest(model_name=pick("model", st.just(model), st.text(max_size=6)),
                                   model_version=pick("version", st.sampled_from(["", "1"]), st.text(max_size=3)),
                                   id=draw(st.text(max_size=4)))
    for name in pick("inputs", st.just([INPUT]), st.lists(st.sampled_from([INPUT, "input", ""]), max_size=2)):
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        if "input_parameters" in broken:
            tensor.parameters["layout"].string_param = "NHWC"
    encoding = pick("encoding", st.sampled_from(["raw", "typed"]), st.sampled_from(["junk", "short", "none"]))
    if datatype in tensors.DTYPES and encoding in ("raw", "typed", "short"):
        poison = pick("values", st.just("none"), st.sampled_from(["nan", "inf", "huge"]))
        values = pixel_array(datatype, shape, draw(st.integers(0, 2**32 - 1)), poison)
        if encoding == "typed" and datatype in tensors.CONTENTS_FIELDS and request.inputs:
            getattr(request.inputs[0].contents, tensors.CONTENTS_FIELDS[datatype]).extend(values.ravel().tolist())
        else:
            raw = np.ascontiguousarray(values).tobytes()
            request.raw_input_contents.append(raw[:-1] if encoding == "short" else raw)
    elif encoding == "junk":
        request.raw_input_contents.append(draw(st.binary(max_size=64)))
    if "extra_raw" in broken:
        request.raw_input_contents.append(b"\x00" * draw(st.integers(0, 8)))
    names = pick("outputs", st.lists(st.sampled_from(list(OUTPUTS)), max_size=3),
                 st.lists(st.sampled_from([*OUTPUTS, "", "label", "NOPE"]), min_size=1, max_size=4))
    for name in names:
        request.outputs.add(name=name)
    if "output_parameters" in broken and request.outputs:
        request.outputs[0].parameters["binary_data"].bool_param = True
    parameters = pick("parameters", valid_parameters(height, width, classes),
                      st.dictionaries(st.sampled_from([*NAMES, "bogus", ""]), ANY_VALUE, min_size=1, max_size=3))
    tensors.set_parameters(request.parameters, parameters)
    return request


def sent_images(request: pb.ModelInferRequest) -> np.ndarray:
    """The images an accepted request carries, decoded independently of the server."""
    tensor = request.inputs[0]
    if request.raw_input_contents:
        return tensors.from_raw(INPUT, tensor.datatype, list(tensor.shape), request.raw_input_contents[0])
    return tensors.from_contents(INPUT, tensor.datatype, list(tensor.shape), tensor.contents)


def requested(request: pb.ModelInferRequest) -> tuple[str, ...]:
    return tuple(dict.fromkeys(o.name for o in request.outputs)) or DEFAULT_OUTPUTS


def test_decoder_accepts_valid_requests_and_refuses_the_rest_cleanly(served):
    """`protocol.decode` alone, many examples: a Work equal to what was sent, or RequestError with a reason."""
    @settings(FUZZ, max_examples=1000)
    @given(infer_requests(served.name, served.height, served.width))
    def decode(request: pb.ModelInferRequest) -> None:
        try:
            model, work = protocol.decode(request, served.server.engine)
        except protocol.RequestError as error:
            assert error.code in REFUSALS and error.message
            return
        images = sent_images(request)
        assert model.name == served.name and 1 <= work.count <= MAX_BATCH
        np.testing.assert_array_equal(work.images, images)
        assert work.images.dtype == images.dtype and images.dtype in (np.uint8, np.float32)
        assert images.dtype == np.uint8 or np.isfinite(images).all()
        assert work.outputs == requested(request)
        assert 0 < work.explain.top_percent <= 100 and 1 <= work.explain.box <= min(served.height, served.width)

    decode()


def test_every_fuzzed_request_gets_a_clean_status_or_the_right_answer(served):
    """Through gRPC and the real handler: OK with outputs matching the in-process computation, or
    INVALID_ARGUMENT/NOT_FOUND; never INTERNAL or UNKNOWN, and the server still answers afterwards."""
    answered = Counter()

    @settings(FUZZ, max_examples=300)
    @given(infer_requests(served.name, served.height, served.width))
    def infer(request: pb.ModelInferRequest) -> None:
        try:
            response = served.stub.ModelInfer(request, timeout=60)
        except grpc.RpcError as error:
            assert error.code() in REFUSALS, f"{error.code()}: {error.details()}"
            assert error.details()
            answered[error.code().name] += 1
            return
        outputs = infer_outputs(response)
        assert tuple(outputs) == requested(request)
        images = sent_images(request)
        for output, array in outputs.items():
            assert array.shape[0] == len(images) and array.dtype == tensors.DTYPES[OUTPUTS[output][0]]
        served.oracle.check(images, outputs)
        answered["OK"] += 1

    infer()
    assert answered["OK"] and answered["INVALID_ARGUMENT"], answered
    for status in ("INTERNAL", "UNKNOWN"):
        assert served.server.metrics.registry.get_sample_value(
            "miscause_inference_request_total", {"model": served.name, "status": status}) is None
    images = np.zeros((1, served.height, served.width, 3), np.uint8)
    request = pb.ModelInferRequest(model_name=served.name)
    request.inputs.add(name=INPUT, datatype="UINT8", shape=list(images.shape))
    request.raw_input_contents.append(images.tobytes())
    np.testing.assert_array_equal(infer_outputs(served.stub.ModelInfer(request, timeout=60))["LABEL"],
                                  served.oracle.labels(images))


@settings(FUZZ, max_examples=200)
@given(payload=st.binary(max_size=256))
def test_arbitrary_bytes_never_break_the_server(served, payload):
    """Bytes that are no ModelInferRequest at all get INVALID_ARGUMENT saying so (the handler parses them
    itself); those that happen to parse are answered like any request; either way the server keeps serving."""
    call = served.channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                      response_deserializer=pb.ModelInferResponse.FromString)
    try:
        pb.ModelInferRequest.FromString(payload)
        parses = True
    except Exception:  # protobuf's DecodeError, whichever implementation raises it
        parses = False
    try:
        call(payload, timeout=30)
    except grpc.RpcError as error:
        if parses:
            assert error.code() in REFUSALS, f"{error.code()}: {error.details()}"
        else:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{error.code()}: {error.details()}"
            assert "not a ModelInferRequest" in error.details(), error.details()
    assert served.stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready


def test_malformed_message_on_a_stream_answers_an_error_and_the_stream_goes_on(served):
    """Raw bytes on ModelStreamInfer: a malformed message gets an error answer in its place, in order, and
    the requests around it are answered normally on the same stream; the refusal is counted."""
    images = np.zeros((1, served.height, served.width, 3), np.uint8)
    request = pb.ModelInferRequest(model_name=served.name, id="good")
    request.inputs.add(name=INPUT, datatype="UINT8", shape=list(images.shape))
    request.raw_input_contents.append(images.tobytes())
    call = served.channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                        response_deserializer=pb.ModelStreamInferResponse.FromString)
    before = served.server.metrics.registry.get_sample_value(
        "miscause_inference_request_total", {"model": "", "status": "INVALID_ARGUMENT"}) or 0
    answers = list(call(iter([request.SerializeToString(), b"\xff\xff\xff", request.SerializeToString()]),
                        timeout=60))
    assert [a.infer_response.id for a in answers] == ["good", "", "good"]
    assert not answers[0].error_message and not answers[2].error_message
    assert "not a ModelInferRequest" in answers[1].error_message
    assert served.server.metrics.registry.get_sample_value(
        "miscause_inference_request_total", {"model": "", "status": "INVALID_ARGUMENT"}) == before + 1
