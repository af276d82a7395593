"""The service probed as an abusive client would: client strings of any length never grow a status message past
its cap, and cancelling many busy streams leaves nothing behind (no asyncio error, every request counted once)."""

from __future__ import annotations

import gc
import logging

import grpc
import numpy as np
import pytest
from test_server_support import WAIT, loopback, make_repository, random_images, sample, wait_until

from miscause.client.api import infer_request
from miscause.proto import grpc_service_pb2 as pb
from miscause.proto import grpc_service_pb2_grpc as pb_grpc
from miscause.server import status
from miscause.server.app import BackgroundServer
from miscause.server.settings import Batching

HUGE = 1_000_000


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_repository(tmp_path_factory.mktemp("repo"), ("alpha",))


@pytest.fixture(scope="module")
def server(repo):
    with BackgroundServer(loopback(repo, batching=Batching(max_batch_size=64, max_queue_size=64))) as running:
        yield running


@pytest.fixture
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def test_elision_keeps_both_ends_and_the_length():
    text = "a" * 100 + "b" * 1000 + "z" * 100
    short = status.elided(text, 80)
    assert len(short) <= 80 and short.startswith("a") and short.endswith("z") and "1,200 characters" in short
    assert status.elided("short", 80) == "short"
    assert len(status.RequestError(grpc.StatusCode.INTERNAL, "x" * HUGE).message) <= status.MESSAGE_LIMIT


def refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value


def test_a_huge_model_name_is_not_found_with_a_bounded_message(stub):
    request = infer_request("alpha", random_images(1), ["LABEL"])
    request.model_name = "M" * HUGE
    error = refusal(lambda: stub.ModelInfer(request, timeout=WAIT))
    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
    assert len(error.details()) <= status.MESSAGE_LIMIT and "unknown model 'MMM" in error.details()
    metadata = refusal(lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="M" * HUGE), timeout=WAIT))
    assert metadata.code() == grpc.StatusCode.NOT_FOUND and len(metadata.details()) <= status.MESSAGE_LIMIT


def test_a_thousand_inputs_named_image_are_invalid_with_a_bounded_message(stub):
    request = infer_request("alpha", random_images(1), ["LABEL"])
    for _ in range(999):
        request.inputs.add().CopyFrom(request.inputs[0])
    error = refusal(lambda: stub.ModelInfer(request, timeout=WAIT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert len(error.details()) <= status.MESSAGE_LIMIT and "1,000 in all" in error.details()


@pytest.mark.parametrize("field", ["output", "parameter", "saliency_method"])
def test_other_huge_client_strings_are_bounded_too(stub, field):
    request = infer_request("alpha", random_images(1), ["LABEL"])
    if field == "output":
        request.outputs.add(name="O" * HUGE)
    elif field == "parameter":
        request.parameters["P" * HUGE].int64_param = 1
    else:
        request.parameters["saliency_method"].string_param = "S" * HUGE
    error = refusal(lambda: stub.ModelInfer(request, timeout=WAIT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert len(error.details()) <= status.MESSAGE_LIMIT


def test_a_stream_answers_a_huge_name_with_a_bounded_error(stub):
    request = infer_request("alpha", random_images(1), ["LABEL"], request_id="I" * (HUGE // 2))
    request.model_name = "M" * (HUGE // 2)
    answers = list(stub.ModelStreamInfer(iter([request]), timeout=WAIT))
    assert len(answers) == 1 and len(answers[0].error_message) <= status.MESSAGE_LIMIT
    assert "unknown model" in answers[0].error_message
    assert len(answers[0].infer_response.id) <= status.MESSAGE_LIMIT


def open_and_cancel(server, payload: pb.ModelInferRequest, streams: int, requests: int) -> None:
    """`streams` streams with `requests` requests written on each; once the server has read at least one request
    from each stream, every stream is cancelled."""
    admitted = server.engine.admission.admitted
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        calls = [stub.ModelStreamInfer(iter([payload] * requests), timeout=WAIT) for _ in range(streams)]
        wait_until(lambda: server.engine.admission.admitted - admitted >= streams)
        for call in calls:
            call.cancel()


def test_cancelling_fifty_busy_streams_logs_no_error_and_counts_each_request_once(server, caplog):
    """Fifty streams of twenty 64-image requests each, cancelled while the model works through them: no asyncio
    error is logged, the server is idle again, and every request it read is counted exactly once."""
    payload = infer_request("alpha", np.zeros((64, 32, 32, 3), np.uint8), ["LABEL", "SALIENCY"])
    before = counted(server), server.engine.admission.admitted
    with caplog.at_level(logging.WARNING):
        open_and_cancel(server, payload, streams=50, requests=20)
        wait_until(lambda: server.engine.admission.in_flight == 0)
        wait_until(lambda: not server.engine.models["alpha"].batcher.running)
        gc.collect()
    errors = [record for record in caplog.records if record.name == "asyncio" or "never retrieved" in
              record.getMessage()]
    assert not errors, [record.getMessage() for record in errors]
    assert sample(server, "miscause_inference_request_total", model="alpha", status="CANCELLED") >= 1
    assert counted(server) - before[0] == server.engine.admission.admitted - before[1] > 0


def counted(server) -> float:
    """Requests the server counted for model alpha, whatever their status."""
    return sum(sample.value for family in server.metrics.registry.collect() for sample in family.samples
               if sample.name == "miscause_inference_request_total" and sample.labels.get("model") == "alpha")
