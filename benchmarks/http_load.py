"""The service benchmark's requests over HTTP/REST: a stand-in for a grpc.aio channel whose unary calls POST
binary inference requests (Triton's binary tensor data extension, as tritonclient.http sends them) with aiohttp,
so `bench serve --protocol http` drives the same loops as over gRPC."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace

import aiohttp
import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"
LIVE_PATH = "/v2/health/live"


@dataclass(frozen=True)
class HttpRequest:
    """A prepared request: the route and the body with its headers (None: a GET)."""

    path: str
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()


class HttpError(Exception):
    """A request that got no answer or a non-200 one; `code().name` names why, as gRPC errors do."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def code(self) -> SimpleNamespace:
        return SimpleNamespace(name=self.name)


def infer_request(model: str, images: np.ndarray, outputs: tuple[str, ...]) -> HttpRequest:
    """A binary inference request for `images` (uint8 [N,H,W,3]) asking `outputs` in binary."""
    header = json.dumps({"inputs": [{"name": "IMAGE", "datatype": "UINT8", "shape": list(images.shape),
                                     "parameters": {"binary_data_size": images.nbytes}}],
                         "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs]})
    header = header.encode()
    return HttpRequest(f"/v2/models/{model}/infer", header + images.tobytes(),
                       ((HEADER_LENGTH, str(len(header))), ("Content-Type", "application/octet-stream")))


class HttpChannel:
    """Calls like a grpc.aio channel's: `channel.unary_unary(method)(request, timeout=...)` answers an object
    whose `outputs` have the response's output names; a b"" request is the liveness check."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    def unary_unary(self, method: str, response_deserializer=None):
        async def call(request: HttpRequest | bytes, timeout: float) -> SimpleNamespace:
            request = request or HttpRequest(LIVE_PATH)
            try:
                async with self.session.request("POST" if request.body is not None else "GET",
                                                self.target + request.path, data=request.body,
                                                headers=dict(request.headers),
                                                timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                    payload = await response.read()
                    if response.status != 200:
                        raise HttpError(f"HTTP_{response.status}")
                    length = int(response.headers.get(HEADER_LENGTH, len(payload)))
            except (TimeoutError, aiohttp.ClientError) as error:
                raise HttpError(type(error).__name__) from None
            outputs = json.loads(payload[:length]).get("outputs", []) if request.body is not None else []
            return SimpleNamespace(outputs=[SimpleNamespace(name=output["name"]) for output in outputs])

        return call

    async def close(self) -> None:
        await self.session.close()
