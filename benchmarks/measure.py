"""Timing primitives shared by the benchmarks: throughput of a repeated call, latency percentiles, CPU time."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Throughput:
    """`calls` calls of `items` items each took `seconds` in all (after the warm-up calls)."""

    calls: int
    items: int
    seconds: float

    @property
    def items_per_s(self) -> float:
        return self.calls * self.items / self.seconds

    @property
    def ms_per_call(self) -> float:
        return 1000 * self.seconds / self.calls


def throughput(call: Callable[[], object], items: int, warmup: int = 2, seconds: float = 2.0,
               min_calls: int = 3, max_calls: int = 100_000) -> Throughput:
    """Call `call` `warmup` times, then repeatedly until `seconds` passed and at least `min_calls` ran."""
    for _ in range(warmup):
        call()
    calls, started = 0, time.perf_counter()
    while calls < max_calls:
        call()
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and calls >= min_calls:
            break
    return Throughput(calls, items, time.perf_counter() - started)


def percentiles(latencies_s: list[float] | np.ndarray, points: tuple[float, ...] = (50, 90, 99)) -> list[float]:
    """The given percentiles of latencies in seconds, in milliseconds (NaN when there are none)."""
    if len(latencies_s) == 0:
        return [float("nan")] * len(points)
    return [float(v) * 1000 for v in np.percentile(np.asarray(latencies_s), points)]


def own_cpu_seconds() -> float:
    """User plus system CPU time of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of another process, all threads (Linux /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15 of stat


def machine_cpu_seconds() -> float:
    """CPU time spent by the whole machine (all cores, everything but idle and iowait) since boot."""
    values = [int(v) for v in open("/proc/stat").readline().split()[1:9]]  # guest time is inside user
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS
