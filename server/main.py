"""Serve a model repository over gRPC and HTTP/REST: the Open Inference Protocol (KServe v2, Triton-compatible).

Every model in the repository is loaded and warmed up before the server reports ready. Requests are batched
per model. Outputs: LOGITS, PROBS, LABEL, SALIENCY, MASK, ERASED_LABEL, ERASED_PROBS, CORRECTED_LABEL.
Prometheus metrics on http://HOST:METRICS_PORT/metrics, grpc.health.v1 and server reflection on the gRPC
port; the REST routes (/v2/...) and the inspector page (/) on the HTTP port. SIGTERM (or Ctrl-C) drains:
NOT_SERVING for the notice time, then new calls are refused, accepted ones finish (those estimated not to
finish within --drain-seconds are refused at once with UNAVAILABLE), the log says how many accepted requests
were answered, refused and dropped, and the process exits 0, or 1 when the drain time ran out with accepted
requests unanswered.

example:
  miscause serve                                   # the embedded models/ on ports 8001, 8000 and 8002
  miscause serve --model-repository /models --grpc-port 0 --http-port 0 --metrics-port 0   # free ports, printed
  MISCAUSE_TOKEN=secret miscause serve --tls-cert server.crt --tls-key server.key --max-batch-size 128

  miscause client infer cat.png --server localhost:8001 --explain --erase --out overlays/
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

from miscause.errors import MiscauseError
from miscause.proto.names import TOKEN_ENV
from miscause.server import logs
from miscause.server.app import Server
from miscause.server.backends import FORWARD_BACKENDS
from miscause.server.settings import REPOSITORY_ENV, Batching, Settings, default_repository


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Settings.__dataclass_fields__
    batching = Batching()
    parser.add_argument("--model-repository", type=Path, default=None,
                        help=f"model repository folder (default: ${REPOSITORY_ENV}, else {default_repository()})")
    parser.add_argument("--host", default=defaults["host"].default, help="address to listen on (default: all)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC port; 0 picks a free one (default 8001)")
    parser.add_argument("--http-port", type=int, default=defaults["http_port"].default,
                        help="HTTP/REST port (the same protocol, and the inspector page at /); 0 picks a free one, "
                             "-1 turns it off (default %(default)s)")
    parser.add_argument("--metrics-port", type=int, default=8002,
                        help="Prometheus /metrics port; 0 picks a free one, -1 turns metrics off (default 8002)")
    group = parser.add_argument_group("batching and limits")
    group.add_argument("--max-batch-size", type=int, default=batching.max_batch_size,
                       help="most images in one batch, and in one request (default %(default)s)")
    group.add_argument("--max-queue-delay-us", type=int, default=batching.max_queue_delay_us,
                       help="longest a request waits for others to join its batch, microseconds "
                            "(default %(default)s)")
    group.add_argument("--preferred-batch-sizes", type=_sizes, default=(),
                       help="comma-separated batch sizes to form when possible, e.g. 8,16,32")
    group.add_argument("--max-queue-size", type=int, default=batching.max_queue_size,
                       help="requests waiting per model before RESOURCE_EXHAUSTED (default %(default)s)")
    group.add_argument("--default-timeout-us", type=int, default=batching.default_timeout_us,
                       help="longest a request may wait in its model's queue before it starts, microseconds; "
                            "past it (or when the queued work is estimated to exceed it on arrival) the request "
                            "is refused with RESOURCE_EXHAUSTED; a request's own timeout or deadline can only "
                            "shorten it; 0: no bound in time (Triton's default_timeout_microseconds, REJECT) "
                            "(default %(default)s)")
    group.add_argument("--max-message-bytes", type=int, default=None,
                       help="largest gRPC message received or sent (default: the largest valid request and "
                            "response of the served models)")
    group.add_argument("--max-concurrent-rpcs", type=int, default=defaults["max_concurrent_rpcs"].default,
                       help="calls and streams open at once; more get RESOURCE_EXHAUSTED (default %(default)s)")
    group.add_argument("--stream-window", type=int, default=defaults["stream_window"].default,
                       help="requests a stream may have unanswered before the server stops reading it "
                            "(default %(default)s)")
    group.add_argument("--max-image-side", type=int, default=defaults["max_image_side"].default,
                       help="largest image height or width accepted (default %(default)s)")
    group = parser.add_argument_group("compute")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    group.add_argument("--forward-backend", choices=FORWARD_BACKENDS, default="onnx",
                       help="what computes LOGITS/PROBS/LABEL: ONNX Runtime or the torch program (default onnx)")
    group.add_argument("--threads", type=int, default=None,
                       help="intra-op threads per model instance (default: CPU cores / (models x instances))")
    group.add_argument("--instances", type=int, default=defaults["instances"].default,
                       help="instances per model, each running its own batches (Triton's instance group "
                            "count; on CUDA each has its own stream) (default %(default)s)")
    group = parser.add_argument_group("security and shutdown")
    group.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve TLS (with --tls-key)")
    group.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    group.add_argument("--token-file", type=Path,
                       help=f"require 'authorization: Bearer <token>' with the token in this file "
                            f"(or in ${TOKEN_ENV})")
    group.add_argument("--drain-seconds", type=float, default=defaults["drain_seconds"].default,
                       help="on SIGTERM, longest wait for accepted calls to finish (default %(default)s)")
    group.add_argument("--drain-notice-seconds", type=float, default=defaults["drain_notice_seconds"].default,
                       help="on SIGTERM, report NOT_SERVING this long while still serving, so load balancers "
                            "move traffic away before calls are refused (default %(default)s)")
    group.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                       help="JSON logs on stderr at this level (default info; debug logs every request)")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from parsed flags; a MiscauseError for values that cannot work."""
    token = os.environ.get(TOKEN_ENV) or None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as error:
            raise MiscauseError(f"cannot read --token-file: {error}") from None
        if not token:
            raise MiscauseError(f"--token-file {args.token_file} is empty")
    try:
        batching = Batching(max_batch_size=args.max_batch_size, max_queue_delay_us=args.max_queue_delay_us,
                            preferred_batch_sizes=args.preferred_batch_sizes, max_queue_size=args.max_queue_size,
                            default_timeout_us=args.default_timeout_us)
    except ValueError as error:
        raise MiscauseError(str(error)) from None
    if args.drain_seconds < 0 or args.drain_notice_seconds < 0:
        raise MiscauseError("--drain-seconds and --drain-notice-seconds must not be negative")
    if min(args.max_image_side, args.max_concurrent_rpcs, args.stream_window, args.instances) < 1:
        raise MiscauseError("--max-image-side, --max-concurrent-rpcs, --stream-window and --instances must be "
                            "positive")
    if args.max_message_bytes is not None and args.max_message_bytes < 1024:
        raise MiscauseError("--max-message-bytes must be at least 1024")
    return Settings(
        model_repository=args.model_repository or default_repository(),
        host=args.host, grpc_port=args.grpc_port, http_port=None if args.http_port < 0 else args.http_port,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        batching=batching, device=args.device, forward_backend=args.forward_backend, threads=args.threads,
        instances=args.instances,
        max_message_bytes=args.max_message_bytes, max_image_side=args.max_image_side,
        max_concurrent_rpcs=args.max_concurrent_rpcs, stream_window=args.stream_window,
        tls_cert=args.tls_cert, tls_key=args.tls_key, token=token, drain_seconds=args.drain_seconds,
        drain_notice_seconds=args.drain_notice_seconds,
    )


async def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT, then drain; 0 when the drain completed, 1 when accepted requests were
    dropped because the drain time ran out."""
    server = Server(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await server.start()
    except BaseException:
        await server.drain()
        raise
    secure = "s" if settings.tls_cert else ""
    rest = f", http{secure}://{settings.host}:{server.http_port}" if server.http_port else ""
    metrics = f", metrics http://{settings.host}:{server.metrics_port}/metrics" if server.metrics_port else ""
    print(f"miscause serve: {', '.join(server.engine.models)} on grpc{secure}://{settings.host}:{server.grpc_port}"
          f"{rest}{metrics}", flush=True)
    await stop.wait()
    report = await server.drain()
    return 1 if report["dropped"] or report["unfinished"] else 0


def run(args: argparse.Namespace) -> int:
    logs.configure(args.log_level)
    return asyncio.run(serve(settings_from_args(args)))
