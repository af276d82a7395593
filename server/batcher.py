"""Dynamic batching for one model: requests coalesced into batches, run on the model's instances.

Work-conserving: when every instance of the model is idle, whatever is queued goes out at once (a lone request
never waits). While some instance is busy, a batch for an idle one goes once the queue reaches the largest
preferred size (or the max batch size) or its oldest request has waited the max queue delay; with every
instance busy, requests queue up and form the next batch. A batch takes the longest run of queued requests
whose image count is a preferred size, else as many as fit. A request whose deadline passed while queued is
failed, never run; a cancelled one leaves the queue at once.

The queue is bounded in count (`max_queue_size`) and, with a default timeout, in time (Triton's default queue
policy, REJECT on timeout): a request arriving when the queue's estimated work exceeds the timeout is refused at
once, and one that waited the timeout without starting is refused then (both `QueueFull`). The estimate is
the recent compute time per image times the images queued and running, per instance.

A drain (`drain_until`) refuses new requests, then at once and again after each batch refuses the queued
requests estimated to finish after the drain ends (`Refused`); `drop` fails whatever is left (`Dropped`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from miscause.server.metrics import Metrics
from miscause.server.settings import Batching
from miscause.server.statistics import Statistics

log = logging.getLogger("miscause.server")


class QueueFull(Exception):
    """The model's queue holds its maximum number of requests."""


class DeadlineExpired(Exception):
    """The request's deadline passed before its batch ran."""


class QueueTimeout(QueueFull):
    """The request waited the queue's timeout without starting, or would have by the estimate on arrival."""


class Closed(Exception):
    """The batcher no longer accepts requests."""


class Refused(Closed):
    """The server is draining and the request, by the estimate, would not finish before the drain ends."""


class Dropped(Closed):
    """The drain time ran out before the request finished."""


RECENT_BATCHES = 32  # batches the compute-time estimate is fitted to


class BatchTimes:
    """Recent batches' compute seconds fitted as `fixed + per_image x images` (least squares; both non-negative),
    to estimate how long queued work takes. Until two batch sizes were seen, a batch of any size is taken to last
    as long as those seen: the estimate then errs short, so it refuses less at once, never more."""

    def __init__(self) -> None:
        self.recent: deque[tuple[int, float]] = deque(maxlen=RECENT_BATCHES)
        self.fixed: float | None = None
        self.per_image = 0.0
        self.lock = threading.Lock()  # instances add from their own worker threads

    def add(self, images: int, seconds: float) -> None:
        with self.lock:
            self.recent.append((images, seconds))
            sizes, times = np.array(self.recent, dtype=np.float64).T
        slope, intercept = np.polyfit(sizes, times, 1) if np.ptp(sizes) > 0 else (0.0, times.mean())
        if slope < 0:
            slope, intercept = 0.0, times.mean()
        elif intercept < 0:
            slope, intercept = float(sizes @ times / (sizes @ sizes)), 0.0
        self.fixed, self.per_image = float(intercept), float(slope)

    def seconds(self, images: int, max_batch: int) -> float | None:
        """Estimated seconds to compute `images` in batches of at most `max_batch` (None before any batch)."""
        if self.fixed is None or images <= 0:
            return None if self.fixed is None else 0.0
        full, rest = divmod(images, max_batch)
        batch = self.fixed + self.per_image * max_batch
        return full * batch + (self.fixed + self.per_image * rest if rest else 0.0)


@dataclass(eq=False)  # identity: a request's arrays have no truth value to compare
class _Pending:
    work: object
    count: int
    deadline: float | None  # the caller's own (DEADLINE_EXCEEDED)
    expires: float | None  # the queue policy's (RESOURCE_EXHAUSTED)
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    """Queue, coalesce and execute requests for one model. `execute(works, instance)` returns one result or
    one exception per work, in order; each instance runs its batches on a thread of its own, never on the
    event loop."""

    def __init__(self, name: str, execute: Callable[[list, int], list], batching: Batching, metrics: Metrics,
                 statistics: Statistics, instances: int = 1) -> None:
        self.name = name
        self.statistics = statistics
        self.execute = execute
        self.batching = batching
        self.metrics = metrics
        self.instances = instances
        self.queue: list[_Pending] = []
        self.executor = ThreadPoolExecutor(max_workers=instances, thread_name_prefix=f"model-{name}")
        self.wakeup = asyncio.Event()
        self.closed = False
        self.task: asyncio.Task | None = None
        self.idle = list(range(instances))  # instances with no batch running
        self.running: list[_Pending] = []
        self.batches: set[asyncio.Task] = set()
        self.target = max(batching.preferred_batch_sizes or (batching.max_batch_size,))
        self.times = BatchTimes()  # recent compute times, from the worker threads
        self.drain_ends: float | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._dispatch_forever(), name=f"batcher-{self.name}")

    async def submit(self, work: object, count: int, timeout: float | None) -> object:
        """The work's result once its batch ran; raises QueueFull, DeadlineExpired, Closed or its own error.
        `timeout`: the caller's own limit in seconds."""
        if self.closed:
            raise Closed(f"model {self.name} is shutting down: send to another replica")
        if len(self.queue) >= self.batching.max_queue_size:
            self._reject("queue_full")
            raise QueueFull(f"model {self.name}: queue full ({self.batching.max_queue_size} requests waiting)")
        limit = self.batching.default_timeout_us / 1e6
        ahead = self.estimated_wait()
        if limit and ahead is not None and ahead > limit:
            self._reject("queue_wait")
            raise QueueTimeout(f"model {self.name}: the queue holds about {ahead:.1f} s of work, beyond its "
                               f"{limit:g} s timeout; retry later or on another replica")
        now = time.monotonic()
        pending = _Pending(work, count, None if timeout is None else now + timeout, now + limit if limit else None,
                           asyncio.get_running_loop().create_future(), now)
        pending.future.add_done_callback(lambda _: self._forget(pending))
        self.queue.append(pending)
        self._depth()
        self.wakeup.set()
        return await pending.future

    def estimated_wait(self) -> float | None:
        """Seconds until a request arriving now could start: the queued images' compute time shared among the
        instances (None before any batch ran). The running batches are left out: the estimate errs short."""
        queued = self.times.seconds(sum(p.count for p in self.queue if not p.future.done()),
                                    self.batching.max_batch_size)
        return None if queued is None else queued / self.instances

    def _reject(self, reason: str) -> None:
        self.metrics.rejected.labels(self.name, reason).inc()

    def _forget(self, pending: _Pending) -> None:
        """A finished or cancelled request gives up its queue slot at once."""
        if pending in self.queue:
            self.queue.remove(pending)
            self._depth()

    def _depth(self) -> None:
        self.metrics.queue_depth.labels(self.name).set(len(self.queue))
        self.metrics.pending.labels(self.name).set(len(self.queue) + len(self.running))

    def _expire(self, now: float) -> float | None:
        """Fail the queued requests past their deadline or the queue's timeout; when the next one expires."""
        soonest = None
        for pending in list(self.queue):
            if pending.future.done():
                continue
            if pending.deadline is not None and now >= pending.deadline:
                pending.future.set_exception(DeadlineExpired(f"deadline passed after {now - pending.enqueued:.3f} "
                                                             "s in the queue; not run"))
            elif pending.expires is not None and now >= pending.expires:
                self._reject("queue_timeout")
                pending.future.set_exception(QueueTimeout(
                    f"model {self.name}: waited the queue's {self.batching.default_timeout_us / 1e6:g} s timeout "
                    "without starting; not run, retry later or on another replica"))
            else:
                for ends in (pending.deadline, pending.expires):
                    if ends is not None and (soonest is None or ends < soonest):
                        soonest = ends
        self._refuse_unfinishable(now)
        return soonest

    def drain_until(self, ends: float) -> None:
        """Accept nothing more; refuse, now and after each batch, the queued requests that would not finish by
        `ends` (monotonic seconds) by the estimate."""
        self.closed = True
        self.drain_ends = ends
        self._refuse_unfinishable(time.monotonic())
        self.wakeup.set()

    def _refuse_unfinishable(self, now: float) -> None:
        """While draining: refuse the queued requests that, by the estimate, would finish after the drain ends
        (the running batches counted as if just started)."""
        if self.drain_ends is None or self.times.fixed is None:
            return
        running = self.times.seconds(sum(p.count for p in self.running), self.batching.max_batch_size)
        images = 0
        for pending in list(self.queue):
            if pending.future.done():
                continue
            images += pending.count
            queued = self.times.seconds(images, self.batching.max_batch_size)
            if now + (running + queued) / self.instances > self.drain_ends:
                self._reject("drain")
                pending.future.set_exception(Refused(
                    f"model {self.name}: the server is draining and this request would not finish before it "
                    "stops; not run, send it to another replica"))

    def drop(self) -> None:
        """Fail every request still queued or running: the drain time ran out."""
        for pending in self.queue + self.running:
            if not pending.future.done():
                pending.future.set_exception(Dropped(f"model {self.name}: the server stopped before this "
                                                     "request finished (its drain time ran out)"))

    async def _dispatch_forever(self) -> None:
        """Form batches and hand each to an idle instance until closed; a fault in one batch fails that batch,
        never the loop."""
        while True:
            await self._wait_for_batch()
            batch = self._take()
            if not batch:
                await asyncio.sleep(0)  # let cancellations and new requests in before looking again
                continue
            task = asyncio.create_task(self._guarded(batch, self.idle.pop()))
            self.batches.add(task)
            task.add_done_callback(self.batches.discard)

    async def _guarded(self, batch: list[_Pending], instance: int) -> None:
        try:
            await self._run(batch, instance)
        except Exception as error:
            log.exception("batch failed outside the model", extra={"fields": {"model": self.name}})
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
        finally:
            self.idle.append(instance)
            self.wakeup.set()

    async def _wait_for_batch(self) -> None:
        """Until an instance is idle and a batch should go: at once when every instance is idle, else once the
        queue holds a full batch or its oldest request has waited the max queue delay."""
        delay = self.batching.max_queue_delay_us / 1e6
        while True:
            now = time.monotonic()
            expiry = self._expire(now)
            timeout = None if expiry is None else expiry - now
            live = [p for p in self.queue if not p.future.done()]
            if live and self.idle:
                queued = sum(p.count for p in live)
                waited = now - live[0].enqueued
                if len(self.idle) == self.instances or queued >= self.target or waited >= delay:
                    return
                timeout = delay - waited if timeout is None else min(timeout, delay - waited)
            self.wakeup.clear()
            with contextlib.suppress(TimeoutError):  # woken, or a delay or an expiry is due: look again
                await asyncio.wait_for(self.wakeup.wait(), timeout)

    def _take(self) -> list[_Pending]:
        """The next batch from the head of the queue; expired requests are failed on the way."""
        self._expire(time.monotonic())
        batch: list[_Pending] = []
        total = 0
        for pending in list(self.queue):
            if pending.future.done():  # cancelled or expired: out of the queue now, not when its callback runs
                self.queue.remove(pending)
                continue
            if batch and total + pending.count > self.batching.max_batch_size:
                break
            batch.append(pending)
            total += pending.count
        preferred = set(self.batching.preferred_batch_sizes)
        if preferred and total not in preferred:
            sizes = [sum(p.count for p in batch[:n]) for n in range(1, len(batch) + 1)]
            fits = [n for n, size in enumerate(sizes, 1) if size in preferred]
            batch = batch[:fits[-1]] if fits else batch
        for pending in batch:
            self.queue.remove(pending)
        self._depth()
        return batch

    async def _run(self, batch: list[_Pending], instance: int) -> None:
        started = time.monotonic()
        for pending in batch:
            self.metrics.queue_seconds.labels(self.name).observe(started - pending.enqueued)
            self.statistics.queued(started - pending.enqueued)
        self.running.extend(batch)
        self._depth()
        works = [p.work for p in batch]
        try:
            results = await asyncio.get_running_loop().run_in_executor(self.executor, self._execute_timed, works,
                                                                       instance, sum(p.count for p in batch))
        except Exception as error:  # the batch fails, the batcher carries on
            results = [error] * len(batch)
        self.running = [pending for pending in self.running if pending not in batch]
        self._depth()
        self.metrics.batch_size.labels(self.name).observe(sum(p.count for p in batch))
        for pending, result in zip(batch, results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)

    def _execute_timed(self, works: list, instance: int, images: int) -> list:
        started = time.perf_counter()
        results = self.execute(works, instance)
        seconds = time.perf_counter() - started
        self.times.add(images, seconds)
        self.metrics.compute_seconds.labels(self.name).observe(seconds)
        self.metrics.executions.labels(self.name).inc()
        return results

    async def close(self) -> None:
        """Stop taking requests, fail what is still queued, and stop the worker thread."""
        self.closed = True
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        for task in list(self.batches):
            task.cancel()
        await asyncio.gather(*self.batches, return_exceptions=True)
        for pending in self.running + self.queue:
            if not pending.future.done():
                pending.future.set_exception(Closed(f"model {self.name} shut down before the request ran"))
        self.executor.shutdown(wait=True)
