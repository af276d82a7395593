"""The server's lifecycle: load and warm up every model, then listen (gRPC, health, reflection; HTTP/REST and
the inspector page; metrics); on stop, drain: report NOT_SERVING for a notice time, then refuse new calls,
finish accepted ones (refusing at once those that cannot finish in time), close the listeners, release the
models and say what became of every accepted request.

`BackgroundServer` runs one on its own event loop in a thread, for embedding it in another program.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from miscause.errors import MiscauseError
from miscause.server import http, protocol
from miscause.server.engine import Engine
from miscause.server.metrics import Metrics
from miscause.server.service import SERVICE, InferenceService, TokenAuth, register
from miscause.server.settings import Settings

log = logging.getLogger("miscause.server")
REFUSAL_SECONDS = 0.25  # how long new calls are refused before the listener closes


class Server:
    """One server: `await start()`, later `await drain()`; ports are known after start."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.engine = Engine(settings, self.metrics)
        self.grpc: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer()
        self.service = InferenceService(self.engine, self.metrics)
        self.httpd = None
        self.rest = None
        self.grpc_port = 0
        self.http_port: int | None = None
        self.metrics_port: int | None = None

    def _credentials(self) -> grpc.ServerCredentials | None:
        cert, key = self.settings.tls_cert, self.settings.tls_key
        if cert is None and key is None:
            return None
        if cert is None or key is None:
            raise MiscauseError("TLS needs both a certificate and a key (--tls-cert and --tls-key)")
        try:
            return grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
        except OSError as error:
            raise MiscauseError(f"cannot read TLS certificate or key: {error}") from None

    def _ssl_context(self) -> ssl.SSLContext | None:
        """The HTTP front end's TLS, from the same certificate and key as gRPC's."""
        if self.settings.tls_cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
        return context

    async def start(self) -> None:
        """Load and warm up the models (off the event loop), then open the ports."""
        credentials = self._credentials()
        await asyncio.to_thread(self.engine.load)
        self.engine.start()
        receive, send = protocol.message_limits(self.engine)
        self.grpc = grpc.aio.server(
            options=[("grpc.max_receive_message_length", receive), ("grpc.max_send_message_length", send)],
            interceptors=[TokenAuth(self.settings.token)] if self.settings.token else [],
            maximum_concurrent_rpcs=self.settings.max_concurrent_rpcs,
        )
        register(self.service, self.grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        names = (SERVICE.full_name, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.grpc)
        address = f"{self.settings.host}:{self.settings.grpc_port}"
        try:
            if credentials is None:
                self.grpc_port = self.grpc.add_insecure_port(address)
            else:
                self.grpc_port = self.grpc.add_secure_port(address, credentials)
        except RuntimeError as error:
            raise MiscauseError(f"cannot listen on {address}: {error}") from None
        await self.grpc.start()
        for service in ("", SERVICE.full_name):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if self.settings.http_port is not None:
            address = f"{self.settings.host}:{self.settings.http_port}"
            try:
                self.rest, self.http_port = await http.start(self.service, self.settings.token, self.settings.host,
                                                             self.settings.http_port, self._ssl_context())
            except OSError as error:
                raise MiscauseError(f"cannot listen on {address} (HTTP): {error}") from None
        if self.settings.metrics_port is not None:
            try:
                self.httpd, self.metrics_port = self.metrics.serve(self.settings.host, self.settings.metrics_port)
            except OSError as error:
                raise MiscauseError(f"cannot serve metrics on port {self.settings.metrics_port}: {error}") from None
        log.info("listening", extra={"fields": {"grpc_port": self.grpc_port, "http_port": self.http_port,
                                                "metrics_port": self.metrics_port,
                                                "tls": credentials is not None, "models": list(self.engine.models),
                                                "auth": bool(self.settings.token)}})

    async def drain(self) -> dict[str, int]:
        """Report NOT_SERVING for the notice time while still serving; then refuse new calls with UNAVAILABLE,
        refuse at once the queued ones that cannot finish in the drain time and let the other accepted ones
        finish, dropping what is left when that time runs out; then close the listener and release the models.
        Returns how the accepted requests ended (`Admission.report`); `dropped` counts those lost."""
        notice, grace = self.settings.drain_notice_seconds, self.settings.drain_seconds
        log.info("draining", extra={"fields": {"notice_seconds": notice, "grace_seconds": grace}})
        self.service.announce_drain()
        await self.health.enter_graceful_shutdown()
        await asyncio.sleep(notice)
        ends = time.monotonic() + grace
        self.service.stop_reading()
        report = await self.engine.drain(grace)
        if not report["dropped"] and not report["unfinished"]:
            # Callers answered last hear UNAVAILABLE from the service for their next call, not CANCELLED:
            # grpc cancels calls that reach a stopping server before a handler takes them (grpc/grpc#41785).
            await asyncio.sleep(min(REFUSAL_SECONDS, grace))
        if self.grpc is not None:
            await self.grpc.stop(max(ends - time.monotonic(), 0.0))
        if self.rest is not None:
            await self.rest.cleanup()
        await self.engine.close()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
        lost = report["dropped"] + report["unfinished"]
        if lost:
            log.error("drain lost accepted requests: the drain time ran out before they finished (raise "
                      "--drain-seconds or lower --default-timeout-us; see docs/deploy.md)", extra={"fields": report})
        log.info("stopped", extra={"fields": report})
        return report


class BackgroundServer:
    """A Server on its own event loop in a daemon thread: `with BackgroundServer(settings) as server:`."""

    def __init__(self, settings: Settings) -> None:
        self.server = Server(settings)
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None
        self.report: dict[str, int] | None = None  # how the drain ended
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="miscause-server",
                                       daemon=True)

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as error:
            self.error = error
            self.started.set()
            await self.server.drain()
            return
        self.started.set()
        await self.stop.wait()
        self.report = await self.server.drain()

    def __enter__(self) -> Server:
        self.thread.start()
        self.started.wait()
        if self.error is not None:
            self.thread.join()
            raise self.error
        return self.server

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join()
