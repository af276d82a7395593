"""The server process killed under load, on loopback.

SIGTERM drains: every request the server accepted (it logs each one it handled) is answered, correctly, the
process exits 0, and whatever it refused was refused with UNAVAILABLE (by the service during the drain, or by
the transport once the listener closed). With more queued than the drain time allows, the queued work that
cannot finish is refused at once, the log counts what was answered, refused and dropped, and the exit status
is 0 only when nothing accepted was dropped. SIGKILL: clients see UNAVAILABLE, never a wrong answer. (Training
killed with SIGKILL and resumed is tested in test_jobs.py.)
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_load_support import Oracle, first_model, random_images, served_repository

from miscause.benchmarks.server_process import ServerProcess
from miscause.client.api import infer_outputs, infer_request
from miscause.proto import grpc_service_pb2 as pb
from miscause.proto import grpc_service_pb2_grpc as pb_grpc

CALLERS = 8
STREAMS = 2


@dataclass
class Outcomes:
    """Every request's fate as the clients saw it, and when the signal went out."""

    seen: dict[str, str] = field(default_factory=dict)
    answered_after_signal: int = 0
    signalled_at: float | None = None

    def record(self, request_id: str, status: str) -> None:
        self.seen[request_id] = status
        if status == "OK" and self.signalled_at is not None:
            self.answered_after_signal += 1

    def statuses(self) -> Counter:
        return Counter(self.seen.values())


def pool(oracle: Oracle) -> tuple[np.ndarray, np.ndarray]:
    """Images with a clear label (top-two margin > 0.05) and those labels."""
    images = random_images(64, oracle.config, seed=3)
    logits = oracle.logits(images)
    top2 = np.sort(logits, axis=1)[:, -2:]
    clear = np.flatnonzero(top2[:, 1] - top2[:, 0] > 0.05)[:16]
    return images[clear], logits[clear].argmax(1)


def verdict(outputs: dict[str, np.ndarray], labels: np.ndarray) -> str:
    return "OK" if np.array_equal(outputs["LABEL"], labels) else f"WRONG {outputs['LABEL']} != {labels}"


async def unary_caller(index: int, stub, model: str, images: np.ndarray, labels: np.ndarray, stop: asyncio.Event,
                       outcomes: Outcomes) -> None:
    """Requests one after another until the server fails one after the signal (or `stop`)."""
    rng = random.Random(index)
    number = 0
    while not stop.is_set():
        number += 1
        request_id = f"u{index}-{number}"
        chosen = [rng.randrange(len(labels)) for _ in range(rng.randint(1, 4))]
        request = infer_request(model, images[chosen], ["LABEL"], request_id=request_id)
        try:
            status = verdict(infer_outputs(await stub.ModelInfer(request, timeout=60)), labels[chosen])
        except grpc.aio.AioRpcError as error:
            status = error.code().name
        outcomes.record(request_id, status)
        if status != "OK" and outcomes.signalled_at is not None:
            return


async def stream_caller(index: int, stub, model: str, images: np.ndarray, labels: np.ndarray,
                        stop: asyncio.Event, outcomes: Outcomes) -> None:
    """One stream, a request written after each answer, until the stream fails or `stop`."""
    call = stub.ModelStreamInfer(timeout=120)
    number = 0
    try:
        while not stop.is_set():
            number += 1
            request_id = f"s{index}-{number}"
            chosen = [number % len(labels)]
            outcomes.seen[request_id] = "SENT"
            try:
                await call.write(infer_request(model, images[chosen], ["LABEL"], request_id=request_id))
            except grpc.aio.AioRpcError:
                # written as the server ended the stream: grpc's aio client reports INTERNAL, not the status
                outcomes.record(request_id, "WRITE_AFTER_END")
                return
            answer = await call.read()
            if answer is grpc.aio.EOF:
                break
            status = answer.error_message or verdict(infer_outputs(answer.infer_response), labels[chosen])
            outcomes.record(request_id, "OK" if status == "OK" else f"STREAM_ERROR {status}")
        await call.done_writing()
    except grpc.aio.AioRpcError as error:
        outcomes.record(f"s{index}-{number}", error.code().name)


async def load_then_signal(server: ServerProcess, model: str, images: np.ndarray, labels: np.ndarray,
                           signum: int, streams: int) -> Outcomes:
    """Callers and streams under way for two seconds, then `signum` to the server; wait for every caller."""
    outcomes = Outcomes()
    stop = asyncio.Event()
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        tasks = [asyncio.create_task(unary_caller(i, stub, model, images, labels, stop, outcomes))
                 for i in range(CALLERS)]
        tasks += [asyncio.create_task(stream_caller(i, stub, model, images, labels, stop, outcomes))
                  for i in range(streams)]
        await asyncio.sleep(2.0)
        outcomes.signalled_at = time.monotonic()
        server.process.send_signal(signum)
        await asyncio.to_thread(server.process.wait, 90)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 90)
    return outcomes


def handled_requests(server: ServerProcess) -> dict[str, str]:
    """Request id -> final status of every request the server handled (its debug log)."""
    handled = {}
    for line in server.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("message") == "infer":
                handled[entry["id"]] = entry["status"]
    return handled


def start(root, *options: str) -> ServerProcess:
    return ServerProcess(root, ["--max-batch-size", "8", "--log-level", "debug", *options]).start()



def test_sigterm_under_load_answers_everything_it_accepted():
    root = served_repository()
    model, _ = first_model(root)
    images, labels = pool(Oracle(root / model))
    server = start(root, "--drain-seconds", "20")
    try:
        outcomes = asyncio.run(load_then_signal(server, model, images, labels, signal.SIGTERM, streams=0))
        assert server.process.wait(30) == 0, server.log_tail()
        handled = handled_requests(server)
    finally:
        server.close()
    statuses = outcomes.statuses()
    assert set(statuses) <= {"OK", "UNAVAILABLE"}, statuses
    assert outcomes.answered_after_signal, "no request was in flight when the signal came"
    # the server's log: accepted requests answered OK, those that came during the drain refused
    assert handled and set(handled.values()) <= {"OK", "UNAVAILABLE"}, Counter(handled.values())
    for request_id, status in handled.items():
        assert outcomes.seen.get(request_id) == status, (request_id, status, outcomes.seen.get(request_id))


def test_sigterm_closes_open_streams_after_answering_them():
    """Streams open across SIGTERM: each request the server accepted is answered, correctly; each stream then
    ends with UNAVAILABLE for the request it left unread, well within the drain time, and the server exits 0."""
    root = served_repository()
    model, _ = first_model(root)
    images, labels = pool(Oracle(root / model))
    server = start(root, "--drain-seconds", "10")
    try:
        began = time.monotonic()
        outcomes = asyncio.run(load_then_signal(server, model, images, labels, signal.SIGTERM, streams=STREAMS))
        assert server.process.wait(30) == 0, server.log_tail()
        handled = handled_requests(server)
    finally:
        server.close()
    assert time.monotonic() - began < 2 + 10 + 15
    assert set(handled.values()) <= {"OK", "UNAVAILABLE"}, Counter(handled.values())
    assert not [status for status in outcomes.seen.values() if status.startswith("WRONG")]
    for request_id, status in outcomes.seen.items():
        # accepted: answered, correctly; not accepted: refused, or left unread when the stream ended
        assert status == "OK" if handled.get(request_id) == "OK" else status != "OK", (request_id, status)
    for index in range(STREAMS):
        sent = [key for key in outcomes.seen if key.startswith(f"s{index}-")]
        last = max(sent, key=lambda key: int(key.split("-")[1]))
        assert outcomes.seen[last] in ("UNAVAILABLE", "WRITE_AFTER_END"), (last, outcomes.seen[last])


def drain_report(server: ServerProcess) -> dict:
    """The counts the server logged when it stopped."""
    for line in reversed(server.log_path.read_text(errors="replace").splitlines()):
        if line.startswith("{") and json.loads(line).get("message") == "stopped":
            return json.loads(line)
    raise AssertionError(f"no 'stopped' line in the server's log:\n{server.log_tail()}")


async def heavy_load_then_signal(server: ServerProcess, request: pb.ModelInferRequest,
                                 callers: int) -> list[tuple[str, float]]:
    """`callers` closed-loop callers of `request`; SIGTERM once one was answered; every answer after the signal
    as (status, seconds after the signal)."""
    answered, after = asyncio.Event(), []
    signalled: list[float] = []

    async def caller(stub) -> None:
        while not signalled or server.process.poll() is None:
            try:
                await stub.ModelInfer(request, timeout=120)
                status = "OK"
            except grpc.aio.AioRpcError as error:
                status = error.code().name
            answered.set()
            if signalled:
                after.append((status, time.monotonic() - signalled[0]))
                if status != "OK":
                    return

    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        tasks = [asyncio.create_task(caller(stub)) for _ in range(callers)]
        await asyncio.wait_for(answered.wait(), 120)
        signalled.append(time.monotonic())
        server.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(server.process.wait, 90)
        await asyncio.wait_for(asyncio.gather(*tasks), 90)
    return after


def test_sigterm_with_more_queued_than_the_drain_allows_refuses_at_once_and_counts():
    """Sixteen callers of 64-image saliency requests (about ten batches queued, no queue timeout) and a 3 s
    drain: the log's counts add up to the accepted requests, queued work that cannot finish is refused with
    UNAVAILABLE before the drain time is out, and the process exits 0 exactly when nothing accepted was dropped."""
    root = served_repository()
    model, config = first_model(root)
    request = infer_request(model, random_images(64, config, seed=5), ["LABEL", "SALIENCY"])
    server = start(root, "--max-batch-size", "64", "--drain-seconds", "3", "--default-timeout-us", "0")
    try:
        after = asyncio.run(heavy_load_then_signal(server, request, callers=16))
        status = server.process.wait(30)
        report = drain_report(server)
    finally:
        server.close()
    outcomes = {key: report[key] for key in ("answered", "refused", "dropped", "cancelled", "unfinished")}
    assert report["accepted"] == sum(outcomes.values()) > 0, report
    assert status == (1 if report["dropped"] or report["unfinished"] else 0), (status, report)
    assert report["refused"] >= 1, report
    assert {code for code, _ in after} <= {"OK", "UNAVAILABLE"}, Counter(code for code, _ in after)
    refused_in_time = [at for code, at in after if code == "UNAVAILABLE" and at < 3.0]
    assert len(refused_in_time) >= report["refused"], (sorted(after, key=lambda a: a[1]), report)


def test_sigkill_under_load_gives_unavailable_never_a_wrong_answer():
    root = served_repository()
    model, _ = first_model(root)
    images, labels = pool(Oracle(root / model))
    server = start(root)
    try:
        outcomes = asyncio.run(load_then_signal(server, model, images, labels, signal.SIGKILL, streams=STREAMS))
        assert server.process.wait(30) == -signal.SIGKILL
    finally:
        server.close()
    statuses = outcomes.statuses()
    assert statuses["OK"] and statuses["UNAVAILABLE"], statuses
    assert set(statuses) <= {"OK", "UNAVAILABLE"}, statuses


def test_sigterm_notice_reports_not_serving_while_still_serving_then_refuses():
    """With a drain notice, health and readiness turn NOT_SERVING at once while requests are still answered;
    once the notice is over new requests are refused with UNAVAILABLE, and the process exits 0."""
    root = served_repository()
    model, _ = first_model(root)
    images, labels = pool(Oracle(root / model))
    request = infer_request(model, images[:2], ["LABEL"])
    server = start(root, "--drain-notice-seconds", "3")
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            assert stub.ServerReady(pb.ServerReadyRequest()).ready
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            while health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() - signalled < 1.5, "health still SERVING after the signal"
                time.sleep(0.02)
            assert not stub.ServerReady(pb.ServerReadyRequest()).ready
            assert np.array_equal(infer_outputs(stub.ModelInfer(request, timeout=10))["LABEL"], labels[:2])
            assert time.monotonic() - signalled < 3, "the notice was over before the request was answered"
            refused = None
            while refused is None and time.monotonic() - signalled < 10:
                try:
                    stub.ModelInfer(request, timeout=10)
                except grpc.RpcError as error:
                    refused, refused_at = error.code().name, time.monotonic() - signalled
        assert refused == "UNAVAILABLE", refused
        assert refused_at >= 3, f"refused {refused_at:.2f} s after the signal, inside the notice"
        assert server.process.wait(30) == 0, server.log_tail()
    finally:
        server.close()
