"""`miscause bench serve`: the service's throughput and latency over gRPC (or HTTP/REST) on loopback, against the
in-process throughput of the same computation.

For each output set (`label`: LABEL; `saliency`: LABEL+SALIENCY; `correction`: CORRECTED_LABEL+ERASED_LABEL):
1. in-process: the server's own engine, loaded in this process with the server's settings, runs batches made
   of `--batch`-image requests (`ServedModel.execute`, as the server's worker does), one request up to
   `--max-batch-size` images, `--in-process-seconds` each; the best rate is the limit the service can approach;
2. a closed-loop sweep: N concurrent callers (unary calls, or streams with `--mode stream`), each sending its
   next request when the last is answered; `--warmup` seconds, then `--duration` measured seconds per point;
   N doubles until throughput grows less than `--growth` twice running once enough images are in flight to
   fill two batches (or N reaches `--max-concurrency`);
3. half load: open-loop arrivals at half the saturated request rate, latency counted from each request's
   scheduled send time;
4. the RPC path alone (ServerLive, no model work) at the largest saturating N: the generator's own ceiling.
With `--protocol http` every load goes over the REST API instead (binary tensors, as tritonclient.http sends them;
unary only), and each set ends with the same load over gRPC and over HTTP, taking turns (`--compare-rounds`,
in the order gRPC, HTTP, HTTP, gRPC, ...), at the HTTP sweep's saturating concurrency: their ratio compares
the protocols within one run.
Each point reports images/s, p50/p90/p99 latency, the CPU used by this load generator, by the server and by
the whole machine, and, from the server's metrics, its mean batch size, compute time per batch and the share
of the time its model worker was computing.

Without `--server`, a server is started on loopback (`--model-repository`, default the server's default) and
stopped after; `--profile` runs it under cProfile and writes the event loop's hottest functions beside the
results. With `--server HOST:PORT` the running server is measured (give `--metrics-url` for its metrics,
and the same batching settings, so the in-process limit computes what it does)."""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import pstats
import random
import shutil
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import grpc
import numpy as np

from miscause.benchmarks.http_load import HttpChannel, HttpError
from miscause.benchmarks.measure import (
    machine_cpu_seconds,
    own_cpu_seconds,
    percentiles,
    process_cpu_seconds,
    throughput,
)
from miscause.benchmarks.report import Run, Table, add_output_arguments, device_tag
from miscause.benchmarks.server_process import ServerProcess
from miscause.errors import MiscauseError

OUTPUT_SETS: dict[str, tuple[str, ...]] = {
    "label": ("LABEL",),
    "saliency": ("LABEL", "SALIENCY"),
    "correction": ("CORRECTED_LABEL", "ERASED_LABEL"),
}
TARGET_RATIO = {"label": 0.90, "correction": 0.85}
REPEATS = 3  # in-process runs per batch size; the best counts
TARGET_TAIL = 3.0  # p99 <= 3 x p50 at half the saturating load
TARGET_HTTP = {"label": 0.90}  # HTTP/REST images/s over gRPC's, the same load
INFER = "/inference.GRPCInferenceService/ModelInfer"
LIVE = "/inference.GRPCInferenceService/ServerLive"
STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
SERVER_METRICS = ("miscause_inference_batch_size", "miscause_inference_compute_duration_seconds",
                  "miscause_inference_queue_duration_seconds", "miscause_inference_request_duration_seconds")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from miscause.server.backends import FORWARD_BACKENDS
    from miscause.server.settings import Batching

    batching = Batching()
    parser.add_argument("--sets", default=",".join(OUTPUT_SETS),
                        help=f"output sets, comma-separated (default: all): {', '.join(OUTPUT_SETS)}")
    parser.add_argument("--batch", type=int, default=1, help="images per request (default: 1)")
    parser.add_argument("--mode", choices=("unary", "stream"), default="unary",
                        help="unary ModelInfer calls, or one ModelStreamInfer stream per caller (default: unary)")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc",
                        help="gRPC, or HTTP/REST with binary tensors (unary), then each set's saturating load over "
                             "both for their ratio (default: grpc)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each measurement (default: 2)")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per point (default: 5)")
    parser.add_argument("--in-process-seconds", type=float, default=3.0,
                        help="measured seconds per in-process batch size (default: 3)")
    parser.add_argument("--start-concurrency", type=int, default=1)
    parser.add_argument("--max-concurrency", type=int, default=128)
    parser.add_argument("--growth", type=float, default=0.05,
                        help="a point 'grows' when it beats the best so far by this fraction (default: 0.05)")
    parser.add_argument("--arrivals", choices=("constant", "poisson"), default="constant",
                        help="spacing of the half-load run's requests (default: constant)")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline of each request, seconds")
    parser.add_argument("--channels", type=int, default=1, help="gRPC channels the callers share (default: 1)")
    parser.add_argument("--model", help="model name (default: the repository's first)")
    parser.add_argument("--model-repository", type=Path, help="default: the server's default repository")
    parser.add_argument("--server", help="HOST:PORT of a running server (default: start one on loopback)")
    parser.add_argument("--metrics-url", help="with --server: its Prometheus endpoint")
    parser.add_argument("--compare-rounds", type=int, default=4,
                        help="with --protocol http: turns of both protocols at the saturating load, in the order "
                             "gRPC, HTTP, HTTP, gRPC, ... (default: 4)")
    parser.add_argument("--http-server", help="with --server and --protocol http: the server's HOST:PORT for HTTP")
    parser.add_argument("--max-batch-size", type=int, default=batching.max_batch_size,
                        help="server batching, also the in-process batch (default %(default)s)")
    parser.add_argument("--max-queue-delay-us", type=int, default=batching.max_queue_delay_us)
    parser.add_argument("--max-queue-size", type=int, default=batching.max_queue_size)
    parser.add_argument("--threads", type=int, help="server intra-op threads (default: the server's)")
    parser.add_argument("--instances", type=int, default=1, help="server instances per model (default: 1)")
    parser.add_argument("--forward-backend", choices=FORWARD_BACKENDS, default="onnx",
                        help="the served forward pass: ONNX Runtime or the torch.export program (default: onnx)")
    parser.add_argument("--profile", action="store_true", help="run the started server under cProfile")
    parser.add_argument("--name", help="result file name without extension (default: serve-<device>)")
    parser.add_argument("--default-timeout-us", type=int, default=batching.default_timeout_us,
                        help="server queue timeout, microseconds (0: none) (default %(default)s)")
    parser.add_argument("--overload", action="store_true",
                        help="find the saturating concurrency, then load the server at 4x it with and without "
                             "the queue timeout (see miscause.benchmarks.serve_overload)")
    parser.add_argument("--overload-seconds", type=float, default=30.0,
                        help="with --overload: measured seconds of each overloaded run (default: 30)")
    parser.add_argument("--refusal-pause", type=float, default=0.1,
                        help="with --overload: seconds a caller waits after a refusal before its next request, "
                             "as a client backing off would (default: 0.1)")
    parser.add_argument("--targets", action="store_true",
                        help="measure the service's three throughput targets instead of the sweep "
                             "(see miscause.benchmarks.serve_targets)")
    add_output_arguments(parser)


@dataclass
class Point:
    """One measured load point: what was offered, what came back, and the CPU it cost."""

    output_set: str
    concurrency: int | None
    rate: float | None
    seconds: float
    images_per_request: int
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    first_refusal_s: float | None = None  # from the first request sent to the first answer other than OK
    generator_cpu_s: float = 0.0
    server_cpu_s: float | None = None
    machine_cpu_s: float = 0.0
    server: dict = field(default_factory=dict)

    @property
    def answered(self) -> int:
        return self.statuses["OK"]

    @property
    def images_per_s(self) -> float:
        return self.answered * self.images_per_request / self.seconds

    def summary(self) -> dict:
        p50, p90, p99 = (v if math.isfinite(v) else None for v in percentiles(self.latencies))
        return {"set": self.output_set, "concurrency": self.concurrency, "rate_rps": self.rate,
                "images_per_s": self.images_per_s, "requests_per_s": self.answered / self.seconds,
                "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "statuses": dict(self.statuses),
                "generator_cores": self.generator_cpu_s / self.seconds,
                "generator_us_per_request": 1e6 * self.generator_cpu_s / max(self.answered, 1),
                "server_cores": None if self.server_cpu_s is None else self.server_cpu_s / self.seconds,
                "machine_cores": self.machine_cpu_s / self.seconds, "server": self.server,
                "first_refusal_s": self.first_refusal_s, "max_ms": max(self.latencies, default=0.0) * 1000 or None}


def scrape(url: str | None) -> dict[str, float]:
    """Sums, counts and bucket counts (`NAME_bucket:LE`) of the server's histograms (all models), from its
    Prometheus endpoint."""
    from prometheus_client.parser import text_string_to_metric_families

    if not url:
        return {}
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values: Counter = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            base = sample.name.removesuffix("_sum").removesuffix("_count").removesuffix("_bucket")
            if base in SERVER_METRICS and sample.name.endswith(("_sum", "_count")):
                values[sample.name] += sample.value
            elif base in SERVER_METRICS and sample.name.endswith("_bucket"):
                values[f"{sample.name}:{sample.labels['le']}"] += sample.value
    return dict(values)


def server_view(before: dict, after: dict, seconds: float) -> dict:
    """Over a point: mean batch size, compute time per batch, queue and in-server time per request, the share
    of the time the model's worker thread was computing, and its speed while it was."""
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    def mean(name: str) -> float | None:
        count = delta.get(f"{name}_count", 0.0)
        return delta[f"{name}_sum"] / count if count else None
    view = {"batches": delta.get("miscause_inference_batch_size_count"),
            "mean_batch": mean("miscause_inference_batch_size"),
            "compute_ms_per_batch": mean("miscause_inference_compute_duration_seconds"),
            "queue_ms": mean("miscause_inference_queue_duration_seconds"),
            "in_server_ms": mean("miscause_inference_request_duration_seconds")}
    computing = delta.get("miscause_inference_compute_duration_seconds_sum", 0.0)
    view["worker_busy"] = computing / seconds if view["batches"] else None
    view["compute_images_per_s"] = delta.get("miscause_inference_batch_size_sum", 0.0) / computing \
        if computing else None
    for key in ("compute_ms_per_batch", "queue_ms", "in_server_ms"):
        view[key] = None if view[key] is None else view[key] * 1000
    view["longest_batch_s_at_most"] = longest(delta, "miscause_inference_compute_duration_seconds")
    view["longest_queue_s_at_most"] = longest(delta, "miscause_inference_queue_duration_seconds")
    return view


def longest(delta: dict, name: str) -> float | None:
    """The smallest histogram bucket bound holding every observation of a point: an upper bound on the longest."""
    count = delta.get(f"{name}_count", 0.0)
    bounds = sorted(float(key.rsplit(":", 1)[1]) for key in delta if key.startswith(f"{name}_bucket:"))
    return next((bound for bound in bounds if count and delta[f"{name}_bucket:{_le(bound)}"] >= count), None)


def _le(bound: float) -> str:
    """A bucket bound as the exposition format writes it."""
    return "+Inf" if bound == float("inf") else repr(bound)


class Window:
    """The measured window of a point: CPU clocks read at its start and end."""

    def __init__(self, point: Point, server_pid: int | None, metrics_url: str | None) -> None:
        self.point, self.pid, self.url = point, server_pid, metrics_url

    def _clocks(self) -> tuple[float, float | None, float]:
        return own_cpu_seconds(), process_cpu_seconds(self.pid) if self.pid else None, machine_cpu_seconds()

    async def run(self, start: float, end: float) -> None:
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        metrics = await asyncio.to_thread(scrape, self.url)
        clocks = self._clocks()
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        after = self._clocks()
        self.point.generator_cpu_s = after[0] - clocks[0]
        self.point.server_cpu_s = None if clocks[1] is None else after[1] - clocks[1]
        self.point.machine_cpu_s = after[2] - clocks[2]
        self.point.server = server_view(metrics, await asyncio.to_thread(scrape, self.url), self.point.seconds)


def channel(target: str):
    """A gRPC channel to HOST:PORT, or for http://HOST:PORT one that sends the same calls over HTTP/REST."""
    if target.startswith("http://"):
        return HttpChannel(target)
    size = 256 * 1024 * 1024
    return grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", size),
                                                      ("grpc.max_send_message_length", size)])


FAILURES = (grpc.aio.AioRpcError, HttpError)  # what a call raises without an OK answer; each has `code().name`


def check(response, outputs: tuple[str, ...]) -> str:
    """OK, or why an answered request is not a correct answer to it."""
    if getattr(response, "error_message", ""):
        return "STREAM_ERROR"
    response = getattr(response, "infer_response", response)
    return "OK" if tuple(o.name for o in response.outputs) == outputs else "WRONG_OUTPUTS"


async def closed_loop(target: str, payload: bytes, outputs: tuple[str, ...], point: Point, concurrency: int,
                      warmup: float, mode: str, timeout: float, channels: int, server_pid: int | None,
                      metrics_url: str | None, method: str = INFER, pause_after_refusal: float = 0.0) -> Point:
    """`concurrency` callers each sending the next request once the last is answered (`pause_after_refusal`
    seconds after an answer other than OK). With `method` LIVE (ServerLive, no model work, nothing checked) it
    measures the RPC path and the generator alone."""
    from miscause.proto import grpc_service_pb2 as pb

    response_type = pb.ModelInferResponse if method == INFER else pb.ServerLiveResponse

    opened = [channel(target) for _ in range(channels)]
    start = time.perf_counter() + warmup
    end = start + point.seconds

    def record(sent: float, done: float, status: str) -> None:
        if status != "OK" and point.first_refusal_s is None:
            point.first_refusal_s = done - (start - warmup)
        if start <= done <= end:
            point.statuses[status] += 1
            if status == "OK":
                point.latencies.append(done - sent)

    async def unary(index: int) -> None:
        call = opened[index % channels].unary_unary(method, response_deserializer=response_type.FromString)
        while (sent := time.perf_counter()) < end:
            try:
                response = await call(payload, timeout=timeout)
                status = check(response, outputs) if method == INFER else "OK"
            except FAILURES as error:
                status = error.code().name
            record(sent, time.perf_counter(), status)
            if status != "OK" and pause_after_refusal:
                await asyncio.sleep(pause_after_refusal)

    async def stream(index: int) -> None:
        opener = opened[index % channels].stream_stream(
            STREAM, response_deserializer=pb.ModelStreamInferResponse.FromString)
        call = opener(timeout=timeout + warmup + point.seconds)
        try:
            while (sent := time.perf_counter()) < end:
                await call.write(payload)
                response = await call.read()
                record(sent, time.perf_counter(), check(response, outputs))
            await call.done_writing()
        except grpc.aio.AioRpcError as error:
            record(time.perf_counter(), time.perf_counter(), error.code().name)

    worker = unary if mode == "unary" else stream
    window = Window(point, server_pid, metrics_url)
    await asyncio.gather(window.run(start, end), *(worker(i) for i in range(concurrency)))
    for opened_channel in opened:
        await opened_channel.close()
    return point


async def open_loop(target: str, payload: bytes, outputs: tuple[str, ...], point: Point, warmup: float,
                    arrivals: str, timeout: float, max_outstanding: int, server_pid: int | None,
                    metrics_url: str | None) -> Point:
    """Requests sent on a schedule at `point.rate` per second whatever the answers; latency from schedule."""
    from miscause.proto import grpc_service_pb2 as pb

    opened = channel(target)
    call = opened.unary_unary(INFER, response_deserializer=pb.ModelInferResponse.FromString)
    begin = time.perf_counter()
    start, end = begin + warmup, begin + warmup + point.seconds
    spacing = random.Random(0)
    outstanding: set[asyncio.Task] = set()

    async def one(scheduled: float) -> None:
        try:
            status = check(await call(payload, timeout=timeout), outputs)
        except FAILURES as error:
            status = error.code().name
        done = time.perf_counter()
        if start <= scheduled < end:
            point.statuses[status] += 1
            if status == "OK":
                point.latencies.append(done - scheduled)

    async def send() -> None:
        scheduled = begin
        while scheduled < end:
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            if len(outstanding) >= max_outstanding:
                if start <= scheduled < end:
                    point.statuses["NOT_SENT"] += 1
            else:
                task = asyncio.create_task(one(scheduled))
                outstanding.add(task)
                task.add_done_callback(outstanding.discard)
            scheduled += spacing.expovariate(point.rate) if arrivals == "poisson" else 1 / point.rate
        await asyncio.gather(*list(outstanding))

    await asyncio.gather(Window(point, server_pid, metrics_url).run(start, end), send())
    await opened.close()
    return point


def sweep_levels(first: int, last: int) -> list[int]:
    """Concurrency levels doubling from `first` to `last` (both included)."""
    levels = [first]
    while levels[-1] * 2 <= last:
        levels.append(levels[-1] * 2)
    return levels if levels[-1] == last else levels + [last]


def saturated(points: list[Point], growth: float, max_batch: int) -> bool:
    """True once the last two points each failed to beat the best before them by `growth`, and enough
    images were in flight to fill two full batches (so the server could batch at its best)."""
    if len(points) < 3 or points[-1].concurrency * points[-1].images_per_request < 2 * max_batch:
        return False
    rates = [p.images_per_s for p in points]
    return all(rates[i] < (1 + growth) * max(rates[:i]) for i in (-2, -1))


async def sweep(args: argparse.Namespace, target: str, payload: bytes, name: str, server_pid: int | None,
                metrics_url: str | None) -> list[Point]:
    """The closed-loop sweep of one output set: doubling concurrency until throughput stops growing."""
    points: list[Point] = []
    for concurrency in sweep_levels(args.start_concurrency, args.max_concurrency):
        point = Point(name, concurrency, None, args.duration, args.batch)
        await closed_loop(target, payload, OUTPUT_SETS[name], point, concurrency, args.warmup, args.mode,
                          args.timeout, args.channels, server_pid, metrics_url)
        print_point(point)
        points.append(point)
        if saturated(points, args.growth, args.max_batch_size):
            break
    return points


def print_point(point: Point) -> None:
    s = point.summary()
    load = f"c={point.concurrency}" if point.concurrency else f"rate={point.rate:.0f}/s"
    batch = s["server"].get("mean_batch")
    p50, p99 = (f"{v:7.2f}" if v is not None else "      -" for v in (s["p50_ms"], s["p99_ms"]))
    print(f"{point.output_set:>10} {load:>12}: {s['images_per_s']:8.1f} images/s  p50 {p50} "
          f"p99 {p99} ms  generator {s['generator_cores']:.2f} cores  "
          f"batch {batch if batch is None else round(batch, 1)}  {dict(point.statuses)}", flush=True)


def best_rate(call, items: int, seconds: float) -> float:
    """Items/s of `call`, the best of REPEATS timed runs (sharing `seconds`) after a warm-up, so a burst of other
    work on the machine lowers an in-process limit less than it lowers the service."""
    return max(throughput(call, items, warmup=2 if run == 0 else 0, seconds=seconds / REPEATS).items_per_s
               for run in range(REPEATS))


def in_process(engine, model_name: str, outputs: tuple[str, ...], batch: int, seconds: float) -> dict[int, float]:
    """Images/s of the server's engine in this process, by batch size: batches of `batch`-image requests, as
    the worker thread runs them (`ServedModel.execute`), from one request up to the max batch size (`best_rate`)."""
    from miscause.server.pipeline import Work

    model = engine.models[model_name]
    explain = engine.explain(model, {})
    images = np.random.default_rng(0).integers(0, 256, (batch, model.height, model.width, 3), dtype=np.uint8)
    rates = {}
    requests = 1
    while requests * batch <= engine.settings.batching.max_batch_size:
        works = [Work(images, outputs, explain) for _ in range(requests)]
        rates[requests * batch] = best_rate(partial(model.execute, works), requests * batch, seconds)
        requests *= 2
    return rates


def profile_text(path: Path, top: int = 25) -> str:
    """The profile's hottest functions by own time, then by cumulative time."""
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def server_options(args: argparse.Namespace) -> list[str]:
    options = ["--max-batch-size", str(args.max_batch_size), "--max-queue-delay-us", str(args.max_queue_delay_us),
               "--max-queue-size", str(args.max_queue_size), "--default-timeout-us", str(args.default_timeout_us),
               "--log-level", "warning"]
    options += ["--instances", str(args.instances), "--forward-backend", args.forward_backend]
    return options + (["--threads", str(args.threads)] if args.threads else [])


def tables(sets: list[str], sweeps: dict[str, list[Point]], halves: dict[str, Point],
           in_process_rates: dict[str, dict[int, float]], ceiling: Point,
           comparisons: dict[str, dict]) -> tuple[list[Table], dict]:
    """The in-process rates, the sweep, the generator's own ceiling, and the summary (service against the best
    in-process rate, tail latency at half load)."""
    limits = {name: max(rates.values()) for name, rates in in_process_rates.items()}
    sizes = sorted({size for rates in in_process_rates.values() for size in rates})
    engine_table = Table("In-process engine (ServedModel.execute), images/s by batch size",
                         ["set", *(f"batch {size}" for size in sizes)],
                         [[name, *(in_process_rates[name].get(size) for size in sizes)] for name in sets])
    sweep = Table("Closed-loop sweep (images/s; latency ms; CPU in cores)",
                  ["set", "callers", "images/s", "p50", "p90", "p99", "mean batch", "compute ms/batch",
                   "worker busy", "generator", "server", "machine", "not OK"])
    summary = Table("Service against in-process, and latency at half the saturating load",
                    ["set", "service img/s", "in-process img/s", "ratio", "target", "half-load p50", "p99",
                     "p99/p50", "service req/s", "generator cores", "generator us/req"])
    alone = ceiling.summary()
    generator = Table("RPC path and load generator alone (ServerLive, no model work)",
                      ["callers", "requests/s", "p50", "p99", "generator cores", "generator us/req", "server",
                       "machine"],
                      [[ceiling.concurrency, alone["requests_per_s"], alone["p50_ms"], alone["p99_ms"],
                        alone["generator_cores"], alone["generator_us_per_request"], alone["server_cores"],
                        alone["machine_cores"]]])
    verdicts = {}
    for name in sets:
        for point in sweeps[name] + [halves[name]]:
            s = point.summary()
            load = point.concurrency if point.concurrency else f"{point.rate:.0f}/s open"
            sweep.rows.append([name, load, s["images_per_s"], s["p50_ms"], s["p90_ms"], s["p99_ms"],
                               s["server"].get("mean_batch"), s["server"].get("compute_ms_per_batch"),
                               s["server"].get("worker_busy"), s["generator_cores"], s["server_cores"],
                               s["machine_cores"],
                               sum(point.statuses.values()) - point.answered])
        best = max(sweeps[name], key=lambda p: p.images_per_s)
        half = halves[name].summary()
        ratio = best.images_per_s / limits[name]
        tail = half["p99_ms"] / half["p50_ms"] if half["p50_ms"] else None
        target = TARGET_RATIO.get(name)
        verdicts[name] = {"service_images_per_s": best.images_per_s, "in_process_images_per_s": limits[name],
                          "ratio": ratio, "ratio_target": target,
                          "ratio_met": None if target is None else ratio >= target,
                          "saturating_concurrency": best.concurrency, "saturation": best.summary(),
                          "half_load": half,
                          "tail_ratio": tail, "tail_met": tail is not None and tail <= TARGET_TAIL}
        summary.rows.append([name, best.images_per_s, limits[name], ratio,
                             "-" if target is None else f">= {target:.2f} {'met' if ratio >= target else 'MISSED'}",
                             half["p50_ms"], half["p99_ms"], tail, best.summary()["requests_per_s"],
                             best.summary()["generator_cores"], best.summary()["generator_us_per_request"]])
    parts = [engine_table, sweep, generator, summary]
    if comparisons:
        parts.append(Table("HTTP/REST against gRPC: the same load, taking turns (images/s; latency ms)",
                           ["set", "callers", "gRPC img/s", "HTTP img/s", "HTTP/gRPC", "target", "gRPC p50",
                            "HTTP p50", "gRPC p99", "HTTP p99"],
                           [[name, c["concurrency"], c["grpc"]["images_per_s"], c["http"]["images_per_s"], c["ratio"],
                             "-" if c["ratio_target"] is None
                             else f">= {c['ratio_target']:.2f} {'met' if c['ratio_met'] else 'MISSED'}",
                             c["grpc"]["p50_ms"], c["http"]["p50_ms"], c["grpc"]["p99_ms"], c["http"]["p99_ms"]]
                            for name, c in comparisons.items()]))
    return parts, {"sets": verdicts, "rpc_only": alone, "in_process_by_batch": in_process_rates,
                   "http_vs_grpc": comparisons}


def notes_for(verdicts: dict) -> list[str]:
    """Per set: where the time went at saturation, and each target missed."""
    alone = verdicts["rpc_only"]
    notes = [f"the RPC path with no model work (ServerLive) sustained {alone['requests_per_s']:.0f} requests/s with "
             f"the generator using {alone['generator_cores']:.2f} cores: the ceiling of this generator and "
             "transport on this machine"]
    for name, v in verdicts["sets"].items():
        top = v["saturation"]
        view = top["server"]
        where = f"{name}: at saturation ({v['saturating_concurrency']} callers) "
        if view.get("worker_busy") is not None:
            where += (f"the model worker computed {view['worker_busy']:.0%} of the time, at "
                      f"{view['compute_images_per_s']:.0f} images/s while computing (mean batch "
                      f"{view['mean_batch']:.1f}; in-process {v['in_process_images_per_s']:.0f} images/s at full "
                      f"batches); ")
        where += (f"the load generator used {top['generator_cores']:.2f} cores "
                  f"({top['generator_us_per_request']:.0f} us per request), the server "
                  + ("?" if top["server_cores"] is None else f"{top['server_cores']:.2f}")
                  + f", the whole machine {top['machine_cores']:.2f}")
        notes.append(where)
        if v["ratio_met"] is False:
            notes.append(f"{name}: service {v['service_images_per_s']:.0f} images/s is {v['ratio']:.0%} of "
                         f"in-process {v['in_process_images_per_s']:.0f}, under the {v['ratio_target']:.0%} target")
        if v["tail_ratio"] is None:
            notes.append(f"{name}: no request answered at half load")
        elif not v["tail_met"]:
            notes.append(f"{name}: p99/p50 at half load {v['tail_ratio']:.1f} exceeds {TARGET_TAIL:g}")
    for name, c in verdicts["http_vs_grpc"].items():
        if c["ratio"] is not None:
            notes.append(f"{name}: HTTP/REST {c['http']['images_per_s']:.0f} images/s against gRPC "
                         f"{c['grpc']['images_per_s']:.0f} at {c['concurrency']} callers, ratio {c['ratio']:.2f}"
                         + ("" if c["ratio_target"] is None else f" (target {c['ratio_target']:.2f})"))
    return notes


async def compare_protocols(args: argparse.Namespace, name: str, targets: dict[str, str], payloads: dict,
                            concurrency: int, server_pid: int | None, metrics_url: str | None) -> dict:
    """The same closed-loop load over gRPC and over HTTP/REST, taking turns `--compare-rounds` times in the order
    gRPC, HTTP, HTTP, gRPC, ... so other work on the machine that grows or fades over the run weighs on both
    alike; HTTP images/s over gRPC's, from the answers of every turn."""
    points: dict[str, Point] = {}
    for turn in range(args.compare_rounds):
        for protocol in ("grpc", "http") if turn % 2 == 0 else ("http", "grpc"):
            point = Point(f"{name} {protocol}", concurrency, None, args.duration, args.batch)
            await closed_loop(targets[protocol], payloads[protocol], OUTPUT_SETS[name], point, concurrency,
                              args.warmup, "unary", args.timeout, args.channels, server_pid, metrics_url)
            print_point(point)
            if protocol in points:  # one point over every turn: answers, latencies and times added up
                total = points[protocol]
                total.seconds += point.seconds
                total.statuses += point.statuses
                total.latencies += point.latencies
                for clock in ("generator_cpu_s", "machine_cpu_s"):
                    setattr(total, clock, getattr(total, clock) + getattr(point, clock))
                total.server_cpu_s = None
                total.server = {}
            else:
                points[protocol] = point
    summaries = {protocol: point.summary() for protocol, point in points.items()}
    grpc_rate = summaries["grpc"]["images_per_s"]
    ratio = summaries["http"]["images_per_s"] / grpc_rate if grpc_rate else None
    target = TARGET_HTTP.get(name)
    return {"concurrency": concurrency, "rounds": args.compare_rounds, "grpc": summaries["grpc"],
            "http": summaries["http"], "ratio": ratio, "ratio_target": target,
            "ratio_met": None if target is None or ratio is None else ratio >= target}


async def measure(args: argparse.Namespace, sets: list[str], targets: dict[str, str], model_name: str, engine,
                  server_pid: int | None, metrics_url: str | None) -> tuple[dict, dict, dict, Point, dict]:
    """Per set: the in-process rates by batch size, the closed-loop sweep and the half-load point (and with
    `--protocol http`, the protocols compared); then the RPC-only ceiling. `targets`: address by protocol."""
    from miscause.benchmarks import http_load
    from miscause.client.api import infer_request

    model = engine.models[model_name]
    images = np.random.default_rng(1).integers(0, 256, (args.batch, model.height, model.width, 3), dtype=np.uint8)
    target = targets[args.protocol]
    sweeps, halves, in_process_rates, comparisons = {}, {}, {}, {}
    for name in sets:
        outputs = OUTPUT_SETS[name]
        by_batch = in_process(engine, model_name, outputs, args.batch, args.in_process_seconds)
        in_process_rates[name] = by_batch
        print(f"{name:>10} in-process: " + ", ".join(f"batch {b} {r:.1f}" for b, r in by_batch.items())
              + " images/s", flush=True)
        payloads = {"grpc": infer_request(model_name, images, outputs).SerializeToString(),
                    "http": http_load.infer_request(model_name, images, outputs)}
        payload = payloads[args.protocol]
        points = await sweep(args, target, payload, name, server_pid, metrics_url)
        sweeps[name] = points
        best = max(points, key=lambda p: p.images_per_s)
        rate = best.answered / best.seconds / 2
        half = Point(name, None, rate, args.duration, args.batch)
        await open_loop(target, payload, outputs, half, args.warmup, args.arrivals, args.timeout,
                        max(4 * best.concurrency, 16), server_pid, metrics_url)
        print_point(half)
        halves[name] = half
        if args.protocol == "http":
            comparisons[name] = await compare_protocols(args, name, targets, payloads, best.concurrency, server_pid,
                                                        metrics_url)
    callers = max(best.concurrency for best in (max(p, key=lambda q: q.images_per_s) for p in sweeps.values()))
    ceiling = Point("ServerLive", callers, None, args.duration, 1)
    await closed_loop(target, b"", (), ceiling, callers, args.warmup, "unary", args.timeout, args.channels,
                      server_pid, metrics_url, method=LIVE)
    print_point(ceiling)
    return sweeps, halves, in_process_rates, ceiling, comparisons


def run(args: argparse.Namespace) -> int:
    from miscause import repository
    from miscause.server.engine import Engine
    from miscause.server.metrics import Metrics
    from miscause.server.settings import Batching, Settings, default_repository

    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in sets if s not in OUTPUT_SETS]
    if unknown or not sets:
        raise MiscauseError(f"unknown output set(s) {', '.join(unknown)}: choose from {', '.join(OUTPUT_SETS)}")
    if args.batch < 1 or args.batch > args.max_batch_size or args.start_concurrency < 1 or \
            args.max_concurrency < args.start_concurrency or args.duration <= 0 or args.warmup < 0:
        raise MiscauseError("need 1 <= --batch <= --max-batch-size, 1 <= --start-concurrency <= "
                            "--max-concurrency, --duration > 0 and --warmup >= 0")
    if args.protocol == "http" and (args.mode != "unary" or args.targets or args.server and not args.http_server):
        raise MiscauseError("--protocol http measures unary calls, not --mode stream or --targets, and with "
                            "--server needs --http-server")
    repo = args.model_repository or default_repository()
    model_name = args.model or (repository.model_names(repo) or [None])[0]
    if model_name is None:
        raise MiscauseError(f"no model in {repo}")
    settings = Settings(model_repository=repo, threads=args.threads, forward_backend=args.forward_backend,
                        batching=Batching(max_batch_size=args.max_batch_size,
                                          max_queue_delay_us=args.max_queue_delay_us,
                                          max_queue_size=args.max_queue_size))
    engine = Engine(settings, Metrics())
    engine.load()
    if args.targets:
        from miscause.benchmarks.serve_targets import run_targets

        return run_targets(args, engine, model_name, repo, server_options(args))
    if args.overload:
        from miscause.benchmarks.serve_overload import run_overload

        return run_overload(args, engine, model_name, repo)
    name = args.name or f"serve-{device_tag(str(engine.models[model_name].backend.device))}" \
        + ("-http" if args.protocol == "http" else "")
    profile = Path(tempfile.mkdtemp(prefix="miscause-profile-")) / "server.pstats" \
        if args.profile and not args.server else None
    record_settings = {
        "model": model_name, "repository": str(repo), "sets": sets, "batch_per_request": args.batch,
        "mode": args.mode, "protocol": args.protocol, "warmup_s": args.warmup, "duration_s": args.duration,
        "in_process_seconds": args.in_process_seconds, "growth": args.growth,
        "concurrency": [args.start_concurrency, args.max_concurrency], "arrivals": args.arrivals,
        "channels": args.channels, "max_batch_size": args.max_batch_size,
        "max_queue_delay_us": args.max_queue_delay_us, "max_queue_size": args.max_queue_size,
        "threads": args.threads or "server default", "instances": args.instances,
        "server": args.server or "started on loopback",
        "profile": args.profile,
    }
    record = Run("serve", record_settings, device=str(engine.models[model_name].backend.device))
    if args.server:
        targets = {"grpc": args.server, "http": f"http://{args.http_server}"}
        sweeps, halves, in_process_rates, ceiling, comparisons = asyncio.run(
            measure(args, sets, targets, model_name, engine, None, args.metrics_url))
    else:
        with ServerProcess(repo, server_options(args), profile=profile) as server:
            targets = {"grpc": server.target, "http": server.http_target}
            sweeps, halves, in_process_rates, ceiling, comparisons = asyncio.run(
                measure(args, sets, targets, model_name, engine, server.pid, server.metrics_url))
            status = server.stop()
            if status != 0:
                print(f"warning: the server exited with status {status}:\n{server.log_tail()}")
    table_list, verdicts = tables(sets, sweeps, halves, in_process_rates, ceiling, comparisons)
    data = {"verdicts": verdicts,
            "points": {n: [p.summary() for p in sweeps[n]] + [halves[n].summary()] for n in sets}}
    notes = notes_for(verdicts)
    if profile and profile.is_file():
        text = profile_text(profile)
        if not args.no_write:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"{name}.profile.txt").write_text(text)
        data["profile"] = f"{name}.profile.txt"
    if profile:
        shutil.rmtree(profile.parent, ignore_errors=True)
    record.finish(table_list, data, notes, None if args.no_write else args.out, name=name)
    return 0
