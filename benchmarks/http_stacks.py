"""`miscause bench http-stacks`: the HTTP stacks the REST front end could be built on, against each other.

Each stack serves one route in a child process on loopback, on the standard asyncio loop (the loop grpc.aio
runs on, so the REST front end can share it): the route reads a binary inference request of `--batch` images
(Triton's binary tensor data extension), decodes it with the server's own codec and answers a binary LABEL
response, as the real route does minus the model. A closed loop of `--concurrency` aiohttp callers in this
process measures requests/s and latency for `--duration` seconds after `--warmup`; the stacks take turns
`--repeats` times and each one's median run counts, so a burst of other work on a shared machine favours neither.
The stack with the higher rate carries the service's routes (aiohttp; see docs/serving.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import socket
import time

import numpy as np

from miscause.benchmarks.measure import percentiles
from miscause.benchmarks.report import Run, Table, add_output_arguments

STACKS = ("aiohttp", "uvicorn-starlette")
ROUTE = "/v2/models/bench/infer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=64, help="images (32x32 RGB) per request (default: 64)")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop callers (default: 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring (default: 2)")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per stack (default: 5)")
    parser.add_argument("--repeats", type=int, default=5, help="turns per stack; the median counts (default: 5)")
    parser.add_argument("--name", default="http-stacks-cpu", help="result file name without extension")
    add_output_arguments(parser)


def answer(body: bytes, header_length: str | None) -> tuple[bytes, int | None]:
    """What the infer route does around the model: decode the request, encode a LABEL response for it."""
    from miscause.proto import grpc_service_pb2 as pb
    from miscause.proto import tensors
    from miscause.server import http_codec

    decoded = http_codec.decode("bench", "", body, header_length)
    count = int(decoded.request.inputs[0].shape[0])
    message = pb.ModelInferResponse(model_name="bench", model_version="1", id=decoded.request.id)
    message.outputs.add(name="LABEL", datatype="INT64", shape=[count])
    message.raw_output_contents.append(tensors.to_raw(np.zeros(count, np.int64)))
    return http_codec.encode(message, decoded)


def serve_aiohttp(sock: socket.socket) -> None:
    from aiohttp import web

    async def infer(request: web.Request) -> web.Response:
        payload, length = answer(await request.read(), request.headers.get("Inference-Header-Content-Length"))
        return web.Response(body=payload, content_type="application/octet-stream",
                            headers={"Inference-Header-Content-Length": str(length)})

    app = web.Application(client_max_size=1 << 26)
    app.router.add_post(ROUTE, infer)
    web.run_app(app, sock=sock, print=None, access_log=None, handle_signals=True)


def serve_uvicorn(sock: socket.socket) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def infer(request: Request) -> Response:
        payload, length = answer(await request.body(), request.headers.get("Inference-Header-Content-Length"))
        return Response(payload, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(length)})

    app = Starlette(routes=[Route(ROUTE, infer, methods=["POST"])])
    config = uvicorn.Config(app, fd=sock.fileno(), loop="asyncio", http="httptools", log_level="warning",
                            access_log=False)
    uvicorn.Server(config).run()


def request_body(batch: int) -> tuple[bytes, dict]:
    images = np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
    header = json.dumps({"inputs": [{"name": "IMAGE", "datatype": "UINT8", "shape": list(images.shape),
                                     "parameters": {"binary_data_size": images.nbytes}}],
                         "outputs": [{"name": "LABEL", "parameters": {"binary_data": True}}]}).encode()
    return header + images.tobytes(), {"Inference-Header-Content-Length": str(len(header)),
                                       "Content-Type": "application/octet-stream"}


async def closed_loop(url: str, body: bytes, headers: dict, concurrency: int, warmup: float,
                      duration: float) -> dict:
    import aiohttp

    start = time.perf_counter() + warmup
    end = start + duration
    latencies: list[float] = []
    failures = 0

    async def caller(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        while (sent := time.perf_counter()) < end:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                ok = response.status == 200
            done = time.perf_counter()
            if start <= done <= end:
                if ok:
                    latencies.append(done - sent)
                else:
                    failures += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(caller(session) for _ in range(concurrency)))
    p50, p90, p99 = percentiles(latencies)
    return {"requests_per_s": len(latencies) / duration, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99,
            "failures": failures}


def measure(stack: str, args: argparse.Namespace) -> dict:
    """One stack served by a child process (forked, so it inherits the listening socket), measured from here.
    The socket has TCP_NODELAY, which accepted connections inherit: without it uvicorn's responses waited on
    delayed ACKs (44 ms per request on loopback), a setting, not the stack's speed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    target = serve_aiohttp if stack == "aiohttp" else serve_uvicorn
    child = multiprocessing.get_context("fork").Process(target=target, args=(sock,), daemon=True)
    child.start()
    try:
        body, headers = request_body(args.batch)
        return asyncio.run(closed_loop(f"http://127.0.0.1:{port}{ROUTE}", body, headers, args.concurrency,
                                       args.warmup, args.duration))
    finally:
        os.kill(child.pid, signal.SIGTERM)
        child.join(30)
        if child.is_alive():
            child.kill()
        sock.close()


def run(args: argparse.Namespace) -> int:
    from importlib.metadata import version

    settings = {"packages": {name: version(name) for name in ("aiohttp", "uvicorn", "starlette", "httptools")},
                "batch": args.batch, "concurrency": args.concurrency, "warmup_s": args.warmup,
                "duration_s": args.duration, "repeats": args.repeats, "stacks": list(STACKS)}
    record = Run("http-stacks", settings, device="cpu")
    runs: dict[str, list[dict]] = {stack: [] for stack in STACKS}
    for _ in range(args.repeats):
        for stack in STACKS:
            result = measure(stack, args)
            runs[stack].append(result)
            print(f"{stack:>18}: {result['requests_per_s']:8.1f} requests/s  p50 {result['p50_ms']:.2f} ms  "
                  f"p99 {result['p99_ms']:.2f} ms", flush=True)
    results = {stack: sorted(each, key=lambda r: r["requests_per_s"])[len(each) // 2] for stack, each in runs.items()}
    best = max(STACKS, key=lambda s: results[s]["requests_per_s"])
    table = Table(f"HTTP stacks, {args.batch}-image binary requests, {args.concurrency} callers (median run of "
                  f"{args.repeats})", ["stack", "requests/s", "images/s", "p50 ms", "p90 ms", "p99 ms", "failures",
                                       "of the best", "every run, requests/s"],
                  [[s, r["requests_per_s"], r["requests_per_s"] * args.batch, r["p50_ms"], r["p90_ms"], r["p99_ms"],
                    r["failures"], r["requests_per_s"] / results[best]["requests_per_s"],
                    " ".join(f"{each['requests_per_s']:.0f}" for each in runs[s])] for s, r in results.items()])
    notes = [f"{best} answered the most requests in its median run; the route decodes and encodes with the "
             "server's codec, without the model",
             "both served from a listening socket with TCP_NODELAY set (uvicorn without it: about 44 ms per "
             "request, delayed ACKs)"]
    record.finish([table], {"stacks": results, "runs": runs, "best": best}, notes, None if args.no_write else args.out,
                  name=args.name)
    return 0
