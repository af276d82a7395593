"""What bounds the server: stream answers in request order, a per-stream read-ahead window, a cap on open calls,
message limits sized from the served models, FP32 pixels bounded at decode."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from test_server_support import WAIT, Gate, loopback, make_repository, random_images, sample, wait_until

from miscause.client.api import infer_request
from miscause.proto import grpc_service_pb2 as pb
from miscause.proto import grpc_service_pb2_grpc as pb_grpc
from miscause.proto.names import OUTPUTS
from miscause.server import protocol
from miscause.server.app import BackgroundServer


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_repository(tmp_path_factory.mktemp("repo"), ("alpha", "beta"))


@pytest.fixture(scope="module")
def server(repo):
    with BackgroundServer(loopback(repo)) as running:
        yield running


@pytest.fixture
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}",
                               options=[("grpc.max_send_message_length", 1 << 26)]) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def open_stream(stub: pb_grpc.GRPCInferenceServiceStub) -> tuple[queue.Queue, queue.Queue, threading.Thread]:
    """(requests to write, answers read, the reader thread) of one ModelStreamInfer call; None ends writing."""
    requests: queue.Queue = queue.Queue()
    answers: queue.Queue = queue.Queue()
    call = stub.ModelStreamInfer(iter(requests.get, None), timeout=WAIT)
    reader = threading.Thread(target=lambda: [answers.put(answer) for answer in call], daemon=True)
    reader.start()
    return requests, answers, reader


def test_stream_answers_come_back_in_request_order(server, stub):
    """A request to a held model, then one to a free model: the second is computed first, answered second."""
    before = sample(server, "miscause_inference_request_total", model="beta", status="OK") or 0
    with Gate(server, "alpha") as gate:
        requests, answers, reader = open_stream(stub)
        requests.put(infer_request("alpha", random_images(1), ["LABEL"], request_id="first"))
        gate.entered.wait(WAIT)
        requests.put(infer_request("beta", random_images(1), ["LABEL"], request_id="second"))
        wait_until(lambda: sample(server, "miscause_inference_request_total", model="beta", status="OK") == before + 1)
        assert answers.empty(), "the second answer overtook the first"
        gate.opened.set()
        requests.put(None)
        reader.join(WAIT)
    assert [answers.get_nowait().infer_response.id for _ in range(2)] == ["first", "second"]


def test_stream_reads_at_most_its_window_ahead_of_its_answers(repo):
    """With a window of 2 and the model held, the server takes two requests (running or queued) and leaves the
    rest unread; once the model runs again every request is answered, in order."""
    with BackgroundServer(loopback(repo, stream_window=2)) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with Gate(server, "alpha") as gate:
            requests, answers, reader = open_stream(stub)
            for number in range(6):
                requests.put(infer_request("alpha", random_images(1, seed=number), ["LABEL"], request_id=str(number)))
            batcher = server.engine.models["alpha"].batcher
            gate.entered.wait(WAIT)
            wait_until(lambda: len(batcher.running) + len(batcher.queue) == 2)
            threading.Event().wait(0.5)  # time for more reads, were the window not there
            assert len(batcher.running) + len(batcher.queue) == 2
            gate.opened.set()
            requests.put(None)
            reader.join(WAIT)
    assert [answers.get_nowait().infer_response.id for _ in range(6)] == [str(n) for n in range(6)]


def test_calls_past_the_cap_are_refused_with_resource_exhausted(repo):
    with BackgroundServer(loopback(repo, max_concurrent_rpcs=2)) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = infer_request("alpha", random_images(1), ["LABEL"])
        with Gate(server, "alpha") as gate, ThreadPoolExecutor(2) as pool:
            held = [pool.submit(stub.ModelInfer, request, timeout=WAIT) for _ in range(2)]
            gate.entered.wait(WAIT)
            wait_until(lambda: sample(server, "miscause_inference_queue_depth", model="alpha") == 1)
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(request, timeout=WAIT)
            gate.opened.set()
            assert all(len(future.result(WAIT).outputs) == 1 for future in held)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_message_limits_fit_the_largest_valid_request_and_refuse_larger(server, stub):
    receive, send = protocol.message_limits(server.engine)
    batch = server.settings.batching.max_batch_size
    assert receive == batch * 3 * 32 * 32 * 4 + protocol.MESSAGE_OVERHEAD
    assert send == batch * (10 * 4 * 3 + 8 * 3 + 32 * 32 * (4 + 1)) + protocol.MESSAGE_OVERHEAD
    largest = np.zeros((batch, 3, 32, 32), np.float32)
    answer = stub.ModelInfer(infer_request("alpha", largest, list(OUTPUTS)), timeout=WAIT)
    assert len(answer.outputs) == len(OUTPUTS)
    oversized = infer_request("alpha", random_images(1), ["LABEL"])
    oversized.raw_input_contents[0] = bytes(receive + 1)
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(oversized, timeout=WAIT)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("value", [1e30, -2e4])
def test_huge_fp32_pixels_are_refused_at_decode(stub, value):
    """A finite but huge normalised pixel would overflow the saliency of its whole batch: refused alone."""
    images = np.zeros((1, 3, 32, 32), np.float32)
    images[0, 1, 5, 5] = value
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(infer_request("alpha", images, ["MASK"]), timeout=WAIT)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "within" in refused.value.details()
    assert stub.ModelInfer(infer_request("alpha", images * 0, ["MASK"]), timeout=WAIT).outputs


def test_two_instances_serve_the_same_answers_and_report_their_count(repo, stub):
    """`instances=2`: two backends, ModelConfig's instance group counts both, and concurrent requests get
    the answers one instance gives."""
    images = [random_images(2, seed=50 + n) for n in range(8)]
    expected = [stub.ModelInfer(infer_request("alpha", i, ["LABEL", "MASK"]), timeout=WAIT) for i in images]
    with BackgroundServer(loopback(repo, instances=2)) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        two = pb_grpc.GRPCInferenceServiceStub(channel)
        config = two.ModelConfig(pb.ModelConfigRequest(name="alpha"), timeout=WAIT).config
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: two.ModelInfer(infer_request("alpha", i, ["LABEL", "MASK"]),
                                                             timeout=WAIT), images))
        backends = server.engine.models["alpha"].backends
    assert [group.count for group in config.instance_group] == [2]
    assert len(backends) == 2 and backends[0].session is not backends[1].session
    for got, want in zip(answers, expected, strict=True):
        assert got.raw_output_contents == want.raw_output_contents
