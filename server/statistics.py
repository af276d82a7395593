"""Triton's inference statistics for one model: requests by outcome, time by stage, executions by batch size.

Cumulative since start, as Triton's statistics extension reports them: a request's compute durations are
those of the batch it ran in, its queue time is its own. Stage times are host wall time; on CUDA, device
work queued asynchronously counts to the stage that waits for it (the output copy).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from miscause.proto import grpc_service_pb2 as pb

STAGES = ("compute_input", "compute_infer", "compute_output")


@dataclass
class StageTimes:
    """One batch's wall time per stage in ns: inputs onto the device, compute, outputs back to host arrays."""

    compute_input: int = 0
    compute_infer: int = 0
    compute_output: int = 0


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass
class Statistics:
    """Counters of one model, updated from the event loop and the model's worker threads."""

    success: _Duration = field(default_factory=_Duration)
    fail: _Duration = field(default_factory=_Duration)
    queue: _Duration = field(default_factory=_Duration)
    stages: dict[str, _Duration] = field(default_factory=lambda: {stage: _Duration() for stage in STAGES})
    batches: dict[int, dict[str, _Duration]] = field(
        default_factory=lambda: defaultdict(lambda: {stage: _Duration() for stage in STAGES}))
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def queued(self, seconds: float) -> None:
        """A request left the queue for its batch after waiting `seconds`."""
        with self.lock:
            self.queue.add(int(seconds * 1e9))

    def executed(self, images: int, requests: int, times: StageTimes) -> None:
        """A batch of `images` from `requests` successful requests ran with these stage times."""
        with self.lock:
            self.inference_count += images
            self.execution_count += 1
            self.last_inference_ms = int(time.time() * 1000)
            for stage in STAGES:
                ns = getattr(times, stage)
                self.stages[stage].add(ns * requests, requests)
                self.batches[images][stage].add(ns)

    def finished(self, ok: bool, seconds: float) -> None:
        """A request ended (answered or failed) `seconds` after it arrived."""
        with self.lock:
            (self.success if ok else self.fail).add(int(seconds * 1e9))

    def message(self, name: str, version: str) -> pb.ModelStatistics:
        """The counters as Triton's `ModelStatistics` message."""
        with self.lock:
            stats = pb.ModelStatistics(name=name, version=version, last_inference=self.last_inference_ms,
                                       inference_count=self.inference_count,
                                       execution_count=self.execution_count)
            _copy(stats.inference_stats, {"success": self.success, "fail": self.fail, "queue": self.queue,
                                           **self.stages})
            for size in sorted(self.batches):
                _copy(stats.batch_stats.add(batch_size=size), self.batches[size])
        return stats


def _copy(message: object, durations: dict[str, _Duration]) -> None:
    """Each duration into the message's `StatisticDuration` field of the same name."""
    for name, duration in durations.items():
        target = getattr(message, name)
        target.count, target.ns = duration.count, duration.ns
