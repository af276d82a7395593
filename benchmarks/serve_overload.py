"""`miscause bench serve --overload`: the service loaded past saturation, with its queue timeout and without.

Per output set: on a server without a queue timeout (the control), the closed-loop sweep of `bench serve` finds
the saturating concurrency C (the point of best throughput) and 4 x C callers send closed-loop requests for
`--overload-seconds`; then the same overload runs against a server with the queue timeout `--default-timeout-us`.
A refused caller waits `--refusal-pause` before its next request, as a client backing off would. Each run
reports the accepted requests' images/s and latency (p50, p99, max, from each request's send), the share refused
and the time from the first request sent to the first refusal. The timeout holds when no accepted request took
longer than the timeout plus one batch: the longest batch of the run, bounded above by the smallest bucket of the
server's compute-time histogram that holds every batch (the queue-time histogram bounds the longest wait alike).
"""

from __future__ import annotations

import argparse
import asyncio

import numpy as np

from miscause.benchmarks.report import Run, Table, device_tag
from miscause.benchmarks.serve import OUTPUT_SETS, Point, closed_loop, print_point, server_options, sweep
from miscause.benchmarks.server_process import ServerProcess

OVERLOAD = 4  # callers, as a multiple of the saturating concurrency


async def overload(args: argparse.Namespace, server: ServerProcess, payloads: dict[str, bytes],
                   callers: dict[str, int] | None) -> tuple[dict[str, int], dict[str, Point]]:
    """Per set: the saturating concurrency (swept unless `callers` gives the overload's), and the overloaded
    closed-loop run at OVERLOAD times it."""
    saturating, runs = {}, {}
    for name, payload in payloads.items():
        if callers is None:
            points = await sweep(args, server.target, payload, name, server.pid, server.metrics_url)
            saturating[name] = max(points, key=lambda p: p.images_per_s).concurrency
        count = callers[name] if callers else OVERLOAD * saturating[name]
        point = Point(name, count, None, args.overload_seconds, args.batch)
        await closed_loop(server.target, payload, OUTPUT_SETS[name], point, count, 0.0, args.mode, args.timeout,
                          args.channels, server.pid, server.metrics_url, pause_after_refusal=args.refusal_pause)
        print_point(point)
        runs[name] = point
    return saturating, runs


def row(point: Point, timeout_s: float) -> list:
    s = point.summary()
    total = sum(point.statuses.values())
    batch_s = s["server"].get("longest_batch_s_at_most")
    bound = None if not timeout_s or batch_s is None else 1000 * (timeout_s + batch_s)
    return [point.output_set, timeout_s or "none", point.concurrency, s["images_per_s"], s["p50_ms"], s["p99_ms"],
            s["max_ms"], (total - point.answered) / total if total else None, point.first_refusal_s,
            s["server"].get("compute_ms_per_batch"), batch_s, s["server"].get("longest_queue_s_at_most"), bound,
            None if bound is None or s["max_ms"] is None else s["max_ms"] <= bound, dict(point.statuses)]


def run_overload(args: argparse.Namespace, engine, model_name: str, repo) -> int:
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    model = engine.models[model_name]
    images = np.random.default_rng(1).integers(0, 256, (args.batch, model.height, model.width, 3), dtype=np.uint8)
    from miscause.client.api import infer_request

    payloads = {name: infer_request(model_name, images, OUTPUT_SETS[name]).SerializeToString() for name in sets}
    timeout_s = args.default_timeout_us / 1e6
    settings = {"model": model_name, "repository": str(repo), "sets": sets, "batch_per_request": args.batch,
                "mode": args.mode, "overload_factor": OVERLOAD, "overload_seconds": args.overload_seconds,
                "refusal_pause_s": args.refusal_pause,
                "sweep": {"warmup_s": args.warmup, "duration_s": args.duration,
                          "concurrency": [args.start_concurrency, args.max_concurrency], "growth": args.growth},
                "max_batch_size": args.max_batch_size, "max_queue_delay_us": args.max_queue_delay_us,
                "max_queue_size": args.max_queue_size, "default_timeout_us": args.default_timeout_us,
                "request_deadline_s": args.timeout, "threads": args.threads or "server default",
                "instances": args.instances, "channels": args.channels}
    record = Run("serve-overload", settings, device=str(model.backend.device))
    control_args = argparse.Namespace(**{**vars(args), "default_timeout_us": 0})
    with ServerProcess(repo, server_options(control_args)) as server:
        saturating, control = asyncio.run(overload(args, server, payloads, None))
        server.stop()
    with ServerProcess(repo, server_options(args)) as server:
        _, bounded = asyncio.run(overload(args, server, payloads, {n: OVERLOAD * c for n, c in saturating.items()}))
        server.stop()
    table = Table(f"Closed loop at {OVERLOAD}x the saturating concurrency, {args.batch}-image requests, "
                  f"{args.overload_seconds:g} s each (latency ms from each request's send)",
                  ["set", "queue timeout s", "callers", "accepted images/s", "p50", "p99", "max", "share refused",
                   "first refusal s", "compute ms/batch", "longest batch <= s", "longest queue wait <= s",
                   "timeout + longest batch ms", "max within", "statuses"],
                  [row(point, t) for name in sets for point, t in ((bounded[name], timeout_s), (control[name], 0))])
    data = {"saturating_concurrency": saturating,
            "runs": {name: {"with_timeout": bounded[name].summary(), "control": control[name].summary()}
                     for name in sets}}
    notes = []
    for name in sets:
        with_timeout, without = bounded[name].summary(), control[name].summary()
        notes.append(f"{name}: {OVERLOAD * saturating[name]} callers ({OVERLOAD}x {saturating[name]}): with a "
                     f"{timeout_s:g} s queue timeout accepted p99 {with_timeout['p99_ms'] or 0:.0f} ms, max "
                     f"{with_timeout['max_ms'] or 0:.0f} ms, first refusal after "
                     + ("none" if with_timeout["first_refusal_s"] is None else
                        f"{with_timeout['first_refusal_s']:.2f} s")
                     + f"; without one p99 {without['p99_ms'] or 0:.0f} ms, max {without['max_ms'] or 0:.0f} ms")
    name = args.name or f"serve-overload-{device_tag(str(model.backend.device))}"
    record.finish([table], data, notes, None if args.no_write else args.out, name=name)
    return 0
