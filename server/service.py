"""The `inference.GRPCInferenceService` servicer on grpc.aio, and bearer-token authentication.

Every inference request is timed and counted by model and final status; model work never runs on the event
loop (it goes to the model's batcher and worker thread).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError

from miscause import __version__, repository
from miscause.proto import grpc_service_pb2 as pb
from miscause.proto import grpc_service_pb2_grpc as pb_grpc
from miscause.proto.names import CLASSES_METADATA, METHODS_METADATA, PARAMETERS_METADATA
from miscause.server import protocol
from miscause.server.engine import Engine, ServedModel
from miscause.server.metrics import Metrics
from miscause.server.status import MESSAGE_LIMIT, RequestError, elided, failure, invalid

log = logging.getLogger("miscause.server")
SERVER_NAME = "miscause"
EXTENSIONS = ("model_configuration", "model_repository_read_only", "statistics", "streaming", "parameters")
READ_ONLY = "the model repository is read-only: models are loaded at start (restart the server to change them)"
HEALTH_METHOD_PREFIX = "/grpc.health.v1.Health/"
SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
HANDLER_KINDS = {(False, False): grpc.unary_unary_rpc_method_handler,  # (request, response) streaming
                 (False, True): grpc.unary_stream_rpc_method_handler,
                 (True, False): grpc.stream_unary_rpc_method_handler,
                 (True, True): grpc.stream_stream_rpc_method_handler}
OFF_LOOP_BYTES = 256 * 1024  # payloads larger than this are parsed and encoded off the event loop
T = TypeVar("T")
RAW_REQUESTS = ("ModelInfer", "ModelStreamInfer")  # parsed by their handlers, so malformed bytes get a reason


async def off_loop(size: int, function: Callable[..., T], *args: object) -> T:
    """`function(*args)`, on a worker thread when it handles more than OFF_LOOP_BYTES (parsing, checking or
    encoding a large payload would stall every other call on the event loop), else inline."""
    if size > OFF_LOOP_BYTES:
        return await asyncio.to_thread(function, *args)
    return function(*args)


def _settled(task: asyncio.Future) -> asyncio.Future:
    """`task`, its outcome retrieved whenever it ends: a stream's pending read may end with StopAsyncIteration
    or an error after the stream's reader stopped waiting for it, which asyncio would otherwise log."""
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return task


def token_refusal(given: str | bytes, expected: bytes) -> str | None:
    """None when `given` (an `authorization` header's value) is `expected` (b"Bearer <token>"), else the reason
    it is refused; compared in constant time. gRPC and HTTP check tokens with it."""
    if hmac.compare_digest(given.encode() if isinstance(given, str) else given, expected):
        return None
    return "missing bearer token" if not given else "invalid bearer token"


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """Liveness, readiness, metadata and inference, unary and streaming. The protocol-independent calls
    (`is_ready`, `model_ready`, `metadata_headers`, `statistics`, `infer`, `malformed`) also serve the HTTP
    front end, so both protocols share validation, batching, limits, metrics and drain."""

    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self.stream_window = engine.settings.stream_window
        self.ready = True
        self.draining = asyncio.Event()

    def announce_drain(self) -> None:
        """First step of a drain: report not ready while still serving, so balancers move traffic away."""
        self.ready = False

    def stop_reading(self) -> None:
        """Open streams read no more requests: they end once their accepted requests are answered."""
        self.ready = False
        self.draining.set()

    async def ServerLive(self, request: pb.ServerLiveRequest, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def is_ready(self) -> bool:
        """Every model warmed up and no drain announced."""
        return self.engine.ready and self.ready

    def model_ready(self, name: str, version: str) -> bool:
        """The server is ready and serves this model and version (False for one not served, as Triton answers)."""
        try:
            protocol.find_model(self.engine, name, version)
        except RequestError:
            return False
        return self.is_ready()

    def metadata_headers(self, model: ServedModel) -> tuple[tuple[str, str], ...]:
        """What ModelMetadataResponse has no field for, as response headers: explanation defaults, classes and
        saliency methods."""
        defaults = self.engine.explain(model, {}).as_dict()
        return ((PARAMETERS_METADATA, json.dumps(defaults)), (CLASSES_METADATA, json.dumps(model.classes)),
                (METHODS_METADATA, json.dumps(model.methods)))

    def statistics(self, name: str, version: str) -> pb.ModelStatisticsResponse:
        """One model's statistics, or every model's when the name is empty; RequestError for one not served."""
        models = [protocol.find_model(self.engine, name, version)] if name else list(self.engine.models.values())
        return pb.ModelStatisticsResponse(model_stats=[model.statistics.message(model.name, repository.VERSION)
                                                       for model in models])

    async def ServerReady(self, request: pb.ServerReadyRequest, context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.is_ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, context) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.model_ready(request.name, request.version))

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)

    async def model(self, request, context) -> ServedModel:
        """The model a metadata call names (`name`, `version`); the call ends NOT_FOUND for one not served."""
        try:
            return protocol.find_model(self.engine, request.name, request.version)
        except RequestError as error:
            await context.abort(error.code, error.message)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context) -> pb.ModelMetadataResponse:
        model = await self.model(request, context)
        await context.send_initial_metadata(self.metadata_headers(model))
        return protocol.model_metadata(model, self.engine.settings)

    async def ModelConfig(self, request: pb.ModelConfigRequest, context) -> pb.ModelConfigResponse:
        return protocol.model_config(await self.model(request, context), self.engine.settings)

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context) -> pb.ModelStatisticsResponse:
        try:
            return self.statistics(request.name, request.version)
        except RequestError as error:
            await context.abort(error.code, error.message)

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context) -> pb.RepositoryIndexResponse:
        return protocol.repository_index(self.engine, request.ready)

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest, context):
        await context.abort(grpc.StatusCode.UNAVAILABLE, READ_ONLY)

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest, context):
        await context.abort(grpc.StatusCode.UNAVAILABLE, READ_ONLY)

    async def infer(self, request: pb.ModelInferRequest, timeout: float | None) -> pb.ModelInferResponse:
        """One request through its model's batcher; raises RequestError, counted and timed either way."""
        started = time.perf_counter()
        model, status, images = None, grpc.StatusCode.OK, 0
        try:
            with self.engine.admission.admit():
                model, work = await off_loop(request.ByteSize(), protocol.decode, request, self.engine)
                images = work.count
                limits = [t for t in (timeout, protocol.request_timeout(request)) if t is not None]
                results = await model.batcher.submit(work, work.count, min(limits, default=None))
                size = sum(array.nbytes for array in results.values())
                return await off_loop(size, protocol.encode, request, model, results)
        except asyncio.CancelledError:
            status = grpc.StatusCode.CANCELLED
            raise
        except Exception as error:
            refused = failure(error)
            status = refused.code
            raise refused from None
        finally:
            model = model or self.engine.models.get(request.model_name)  # a request refused at decode counts
            model_label, elapsed = model.name if model else "", time.perf_counter() - started
            self.metrics.requests.labels(model_label, status.name).inc()
            if images:
                self.metrics.inferences.labels(model_label, status.name).inc(images)
            if model:
                self.metrics.request_seconds.labels(model_label).observe(elapsed)
                model.statistics.finished(status == grpc.StatusCode.OK, elapsed)
            log.debug("infer", extra={"fields": {"model": request.model_name, "id": request.id,
                                                 "status": status.name, "images": images,
                                                 "seconds": round(elapsed, 6)}})

    def malformed(self, size: int, message: str) -> RequestError:
        """A request body of `size` bytes that does not decode: counted and logged; the INVALID_ARGUMENT to answer."""
        self.metrics.requests.labels("", grpc.StatusCode.INVALID_ARGUMENT.name).inc()
        log.debug("infer", extra={"fields": {"status": "INVALID_ARGUMENT", "malformed_bytes": size}})
        return invalid(message)

    async def parse(self, raw: bytes) -> pb.ModelInferRequest:
        """The request in `raw`; a message that does not parse is counted and refused with INVALID_ARGUMENT."""
        try:
            return await off_loop(len(raw), pb.ModelInferRequest.FromString, raw)
        except DecodeError as error:
            raise self.malformed(len(raw), f"the message is not a ModelInferRequest ({len(raw)} bytes): {error}") \
                from None

    async def ModelInfer(self, raw: bytes, context) -> pb.ModelInferResponse:
        try:
            return await self.infer(await self.parse(raw), context.time_remaining())
        except RequestError as error:
            await context.abort(error.code, error.message)

    async def ModelStreamInfer(self, raw_iterator, context) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests on a stream are served concurrently (so they batch) and answered in the order they came,
        each answer carrying its request id; a failed or malformed request answers with an error message and
        the stream stays open. At most `stream_window` requests are read ahead of the answers written. A drain
        stops reading: the accepted requests are answered, then the stream ends with UNAVAILABLE."""
        answers: asyncio.Queue = asyncio.Queue()  # one task per request read, in order; None ends the stream
        window = asyncio.Semaphore(self.stream_window)
        cut = False

        async def answer(raw: bytes) -> pb.ModelStreamInferResponse:
            request = pb.ModelInferRequest()
            try:
                request = await self.parse(raw)
                return pb.ModelStreamInferResponse(infer_response=await self.infer(request, context.time_remaining()))
            except RequestError as error:
                failed = pb.ModelInferResponse(model_name=elided(request.model_name, MESSAGE_LIMIT),
                                               id=elided(request.id, MESSAGE_LIMIT))
                return pb.ModelStreamInferResponse(error_message=error.message, infer_response=failed)

        async def read() -> None:
            nonlocal cut
            requests = aiter(raw_iterator)
            drained = _settled(asyncio.ensure_future(self.draining.wait()))
            following = None
            try:
                while not self.draining.is_set():
                    await window.acquire()
                    following = _settled(asyncio.ensure_future(anext(requests)))
                    await asyncio.wait((following, drained), return_when=asyncio.FIRST_COMPLETED)
                    if not following.done() or self.draining.is_set():
                        cut = True
                        break
                    try:
                        raw = following.result()
                    except StopAsyncIteration:
                        break
                    answers.put_nowait(asyncio.create_task(answer(raw)))
            finally:  # on cancel, disconnect or drain: nothing left pending, nothing left unretrieved
                drained.cancel()
                if following is not None:
                    following.cancel()
                answers.put_nowait(None)

        reader = asyncio.create_task(read())
        current = None
        try:
            while (current := await answers.get()) is not None:
                yield await current
                window.release()
            if cut:
                context.set_code(grpc.StatusCode.UNAVAILABLE)
                context.set_details("server is shutting down: requests after the last answer were not read")
        finally:
            reader.cancel()
            unanswered = [current]
            while not answers.empty():
                unanswered.append(answers.get_nowait())
            for task in unanswered:
                if task is not None:
                    task.cancel()


def register(service: InferenceService, server: grpc.aio.Server) -> None:
    """Serve `service` on `server`. The two inference calls take raw bytes and parse them themselves, so a
    message that is not a ModelInferRequest gets INVALID_ARGUMENT with a reason (and is counted)."""
    handlers = {}
    for method in SERVICE.methods:
        parse = getattr(pb, method.input_type.name).FromString
        handlers[method.name] = HANDLER_KINDS[method.client_streaming, method.server_streaming](
            getattr(service, method.name),
            request_deserializer=None if method.name in RAW_REQUESTS else parse,
            response_serializer=getattr(pb, method.output_type.name).SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))


def _refuse(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that answers UNAUTHENTICATED."""

    async def deny(request_or_iterator, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return HANDLER_KINDS[handler.request_streaming, handler.response_streaming](
        deny, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)


class TokenAuth(grpc.aio.ServerInterceptor):
    """Requires `authorization: Bearer <token>` metadata on every call but the standard health checks."""

    def __init__(self, token: str) -> None:
        self.expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(HEALTH_METHOD_PREFIX):
            return handler
        given = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        reason = token_refusal(given, self.expected)
        if reason is None:
            return handler
        return _refuse(handler, f"{reason}: send metadata 'authorization: Bearer <token>'")
