"""The service probed as an abusive client would: client strings of any length never grow a status message past
its cap, and cancelling many busy streams leaves nothing behind (no asyncio error, every request counted once)."""

from __future__ import annotations

import gc
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import grpc
import numpy as np
import pytest
from test_server_support import WAIT, Gate, loopback, make_repository, random_images, sample, wait_until

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


def test_a_drain_refuses_at_once_what_cannot_finish_and_reports_what_it_dropped(repo):
    """One request running (held) and three queued, the estimate saying each image takes 10 s, a 2 s drain: the
    queued three are refused with UNAVAILABLE at once, the running one is dropped when the drain time runs out,
    and the drain's report says so."""
    background = BackgroundServer(replace(loopback(repo), drain_seconds=2.0))
    with background as server, grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = infer_request("alpha", random_images(1), ["LABEL"])
        batcher = server.engine.models["alpha"].batcher
        with Gate(server, "alpha") as gate, ThreadPoolExecutor(4) as pool:
            calls = [pool.submit(timed_call, stub, request)]
            gate.entered.wait(WAIT)
            calls += [pool.submit(timed_call, stub, request) for _ in range(3)]
            wait_until(lambda: len(batcher.queue) == 3)
            batcher.times.add(1, 10.0)
            signalled = time.monotonic()
            background.loop.call_soon_threadsafe(background.stop.set)
            outcomes = [call.result(WAIT) for call in calls]
            wait_until(lambda: server.engine.admission.in_flight == 0)
            gate.opened.set()
    assert [code for code, _ in outcomes] == ["UNAVAILABLE"] * 4
    refused_at = sorted(at - signalled for _, at in outcomes)
    assert refused_at[2] < 2.0 <= refused_at[3], refused_at  # three at once, the running one at the deadline
    assert background.report == {"accepted": 4, "answered": 0, "refused": 3, "dropped": 1, "cancelled": 0,
                                 "unfinished": 0}


def timed_call(stub, request) -> tuple[str, float]:
    """(status name, when the answer came)."""
    try:
        stub.ModelInfer(request, timeout=WAIT)
        code = "OK"
    except grpc.RpcError as error:
        code = error.code().name
    return code, time.monotonic()


def closed_loop(target: str, request: pb.ModelInferRequest, callers: int, seconds: float) -> list[tuple[str, float]]:
    """`callers` threads each sending the next request once the last is answered, for `seconds`: every request's
    (status, latency)."""
    results: list[tuple[str, float]] = []
    end = time.monotonic() + seconds

    def caller(stub) -> None:
        while (sent := time.monotonic()) < end:
            code, answered = timed_call(stub, request)
            results.append((code, answered - sent))

    with grpc.insecure_channel(target) as channel, ThreadPoolExecutor(callers) as pool:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for future in [pool.submit(caller, stub) for _ in range(callers)]:
            future.result(WAIT)
    return results


@pytest.mark.parametrize("timeout_us", [2_000_000, 0])
def test_under_four_times_overload_no_accepted_request_waits_past_the_queue_timeout(repo, timeout_us):
    """Batches of at most 8 images that take at least 1 s each (a sleep beside the model), one-image requests:
    16 callers saturate the model (two batches in flight), 64 overload it four times (about 8 s a request).
    With a 2 s queue timeout part of the load is refused with RESOURCE_EXHAUSTED and every accepted request is
    answered within the timeout plus the longest batch (plus a generous 2 s for this loaded machine), its queue
    wait under 2.5 s; without one (the control) the same load waits longer than that."""
    batching = Batching(max_batch_size=8, max_queue_size=256, default_timeout_us=timeout_us)
    with BackgroundServer(loopback(repo, batching=batching)) as server:
        batcher = server.engine.models["alpha"].batcher
        compute = batcher.execute
        batches: list[float] = []

        def slow(works: list, instance: int) -> list:
            started = time.monotonic()
            time.sleep(1.0)
            results = compute(works, instance)
            batches.append(time.monotonic() - started)
            return results

        batcher.execute = slow
        results = closed_loop(f"127.0.0.1:{server.grpc_port}", infer_request("alpha", random_images(1), ["LABEL"]),
                              callers=64, seconds=8.0)
        queued = sample(server, "miscause_inference_queue_duration_seconds_count", model="alpha")
        within = sample(server, "miscause_inference_queue_duration_seconds_bucket", model="alpha", le="2.5")
    accepted = [latency for code, latency in results if code == "OK"]
    assert accepted and {code for code, _ in results} <= {"OK", "RESOURCE_EXHAUSTED"}, Counter(c for c, _ in results)
    bound = 2.0 + max(batches) + 2.0
    if timeout_us:
        assert any(code == "RESOURCE_EXHAUSTED" for code, _ in results)
        assert max(accepted) <= bound, (max(accepted), bound)
        assert within == queued > 0
    else:
        assert max(accepted) > bound and within < queued, (max(accepted), bound)
