"""The Open Inference Protocol over HTTP/REST (Triton's and KServe's routes), and the inspector page.

An aiohttp application on the gRPC server's event loop. Every route answers what its gRPC call answers, through
the same `InferenceService`: an inference request becomes the service's `ModelInferRequest` (`http_codec`) and
goes through the same validation, batching, limits, metrics and drain; the bearer token is checked as on gRPC.
Failures answer with the HTTP status of their gRPC code and a JSON body `{"error": "..."}` (malformed bodies,
unknown routes and oversized bodies included). The health routes and the page's static files need no token.
"""

from __future__ import annotations

import json
import logging
import ssl
from pathlib import Path

import grpc
from aiohttp import web

from miscause import __version__, repository
from miscause.server import http_codec, protocol
from miscause.server.service import EXTENSIONS, READ_ONLY, SERVER_NAME, InferenceService, off_loop, token_refusal
from miscause.server.status import RequestError

log = logging.getLogger("miscause.server")
STATIC = Path(__file__).resolve().parent / "static"
OPEN_PREFIXES = ("/v2/health/", "/inspector/")  # no token: load balancers' probes and the page's files
STATUS = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.UNAUTHENTICATED: 401,
          grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
          grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNAVAILABLE: 503,
          grpc.StatusCode.DEADLINE_EXCEEDED: 504}
MODEL = "/v2/models/{name}"
VERSIONED = "/v2/models/{name}/versions/{version}"


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def failure(error: RequestError) -> web.Response:
    return error_response(STATUS.get(error.code, 500), error.message)


class RestFrontEnd:
    """Routes of the REST protocol onto an InferenceService; `application()` builds the aiohttp app."""

    def __init__(self, service: InferenceService, token: str | None) -> None:
        self.service = service
        self.engine = service.engine
        self.expected = f"Bearer {token}".encode() if token else None
        self.limit = self.engine.settings.max_concurrent_rpcs
        self.open = 0

    def application(self) -> web.Application:
        receive, _ = protocol.message_limits(self.engine)
        app = web.Application(client_max_size=receive, middlewares=[self.guard])
        routes = [web.get("/v2/health/live", self.live), web.get("/v2/health/ready", self.ready),
                  web.get("/v2", self.server_metadata), web.get("/v2/models/stats", self.statistics),
                  web.post("/v2/repository/index", self.repository_index),
                  web.post("/v2/repository/models/{name}/{action:load|unload}", self.read_only),
                  web.get("/samples/{name}", self.samples), web.get("/samples/{name}/{file}", self.sample),
                  web.get("/", self.page), web.static("/inspector", STATIC)]
        for prefix in (MODEL, VERSIONED):
            routes += [web.get(prefix, self.model_metadata), web.get(f"{prefix}/ready", self.model_ready),
                       web.get(f"{prefix}/config", self.model_config), web.get(f"{prefix}/stats", self.statistics),
                       web.post(f"{prefix}/infer", self.infer)]
        app.add_routes(routes)
        return app

    @web.middleware
    async def guard(self, request: web.Request, handler) -> web.StreamResponse:
        """Token and concurrency checks, and every failure as a JSON error body (never a traceback)."""
        if self.expected is not None and request.path != "/" and not request.path.startswith(OPEN_PREFIXES):
            reason = token_refusal(request.headers.get("Authorization", ""), self.expected)
            if reason is not None:
                return error_response(401, f"{reason}: send header 'Authorization: Bearer <token>'")
        if self.open >= self.limit:
            return error_response(429, f"too many requests open at once (at most {self.limit})")
        self.open += 1
        try:
            return await handler(request)
        except RequestError as error:
            return failure(error)
        except web.HTTPException as error:  # unknown route, method not allowed, body over the size limit
            return error_response(error.status, error.text if error.text and error.text[:3] != str(error.status)
                                  else f"{error.reason}: {request.method} {request.path}")
        except Exception as error:
            log.error("HTTP request failed: %s", error, exc_info=error)
            return error_response(500, f"internal error: {type(error).__name__}")
        finally:
            self.open -= 1

    def model(self, request: web.Request):
        info = request.match_info
        return protocol.find_model(self.engine, info["name"], info.get("version", ""))

    async def live(self, request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready(self, request: web.Request) -> web.Response:
        if self.service.is_ready():
            return web.json_response({"ready": True})
        return error_response(503, "not ready: loading models or draining")

    async def model_ready(self, request: web.Request) -> web.Response:
        self.model(request)
        if self.service.is_ready():
            return web.json_response({"ready": True})
        return error_response(503, "not ready: loading models or draining")

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response({"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)})

    async def model_metadata(self, request: web.Request) -> web.Response:
        """The model's metadata; its explanation defaults and classes in headers, as gRPC sends them."""
        model = self.model(request)
        body = http_codec.to_json(protocol.model_metadata(model, self.engine.settings))
        return web.json_response(body, headers=dict(self.service.metadata_headers(model)))

    async def model_config(self, request: web.Request) -> web.Response:
        config = protocol.model_config(self.model(request), self.engine.settings).config
        return web.json_response(http_codec.to_json(config))

    async def statistics(self, request: web.Request) -> web.Response:
        info = request.match_info
        return web.json_response(http_codec.to_json(self.service.statistics(info.get("name", ""),
                                                                            info.get("version", ""))))

    async def repository_index(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            options = json.loads(body) if body.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            return error_response(400, f"the request is not JSON: {error}")
        ready = options.get("ready", False) if isinstance(options, dict) else None
        if not isinstance(ready, bool):
            return error_response(400, "the request must be a JSON object whose 'ready' is true or false")
        index = protocol.repository_index(self.engine, ready)
        return web.json_response([http_codec.to_json(model) for model in index.models])

    async def read_only(self, request: web.Request) -> web.Response:
        return error_response(STATUS[grpc.StatusCode.UNAVAILABLE], READ_ONLY)

    async def infer(self, request: web.Request) -> web.Response:
        body = await request.read()
        info = request.match_info
        try:
            decoded = await off_loop(len(body), http_codec.decode, info["name"], info.get("version", ""), body,
                                     request.headers.get(http_codec.HEADER_LENGTH))
        except http_codec.BodyError as error:
            raise self.service.malformed(len(body), str(error)) from None
        response = await self.service.infer(decoded.request, None)
        size = sum(len(raw) for raw in response.raw_output_contents)
        payload, length = await off_loop(size, http_codec.encode, response, decoded)
        if length is None:
            return web.Response(body=payload, content_type="application/json")
        return web.Response(body=payload, content_type="application/octet-stream",
                            headers={http_codec.HEADER_LENGTH: str(length)})

    def sample_files(self, name: str) -> dict[str, Path]:
        model = protocol.find_model(self.engine, name, "")
        files = repository.sample_images(Path(self.engine.settings.model_repository) / model.name)
        return {path.name: path for path in files}

    async def samples(self, request: web.Request) -> web.Response:
        """The names of the model's sample images (the repository's `NAME/samples/`), for the inspector."""
        return web.json_response(list(self.sample_files(request.match_info["name"])))

    async def sample(self, request: web.Request) -> web.StreamResponse:
        """One sample image, by a name the listing gives (nothing else under the repository is served)."""
        path = self.sample_files(request.match_info["name"]).get(request.match_info["file"])
        if path is None:
            return error_response(404, f"no sample image {request.match_info['file']!r} for this model")
        return web.FileResponse(path)

    async def page(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")


async def start(service: InferenceService, token: str | None, host: str, port: int,
                ssl_context: ssl.SSLContext | None) -> tuple[web.AppRunner, int]:
    """Serve the REST front end of `service` on this event loop; (the runner, to clean up later, and the port)."""
    runner = web.AppRunner(RestFrontEnd(service, token).application(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True)
    await site.start()
    return runner, runner.addresses[0][1]
