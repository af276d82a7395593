"""Dynamic batching for one model: requests coalesced into batches, run on the model's instances.

Work-conserving: when every instance of the model is idle, whatever is queued goes out at once (a lone request
never waits). While some instance is busy, a batch for an idle one goes once the queue reaches the largest
preferred size (or the max batch size) or its oldest request has waited the max queue delay; with every
instance busy, requests queue up and form the next batch. A batch takes the longest run of queued requests
whose image count is a preferred size, else as many as fit. The queue is bounded (`QueueFull` past it). A
request whose deadline passed while queued is failed, never run; a cancelled one leaves the queue at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from miscause.server.metrics import Metrics
from miscause.server.settings import Batching
from miscause.server.statistics import Statistics

log = logging.getLogger("miscause.server")


class QueueFull(Exception):
    """The model's queue holds its maximum number of requests."""


class DeadlineExpired(Exception):
    """The request's deadline passed before its batch ran."""


class Closed(Exception):
    """The batcher no longer accepts requests."""


@dataclass(eq=False)  # identity: a request's arrays have no truth value to compare
class _Pending:
    work: object
    count: int
    deadline: float | None
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

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._dispatch_forever(), name=f"batcher-{self.name}")

    async def submit(self, work: object, count: int, timeout: float | None) -> object:
        """The work's result once its batch ran; raises QueueFull, DeadlineExpired, Closed or its own error."""
        if self.closed:
            raise Closed(f"model {self.name} is shutting down")
        if len(self.queue) >= self.batching.max_queue_size:
            raise QueueFull(f"model {self.name}: queue full ({self.batching.max_queue_size} requests waiting)")
        loop = asyncio.get_running_loop()
        pending = _Pending(work, count, None if timeout is None else time.monotonic() + timeout,
                           loop.create_future())
        pending.future.add_done_callback(lambda _: self._forget(pending))
        self.queue.append(pending)
        self._depth()
        self.wakeup.set()
        return await pending.future

    def _forget(self, pending: _Pending) -> None:
        """A finished or cancelled request gives up its queue slot at once."""
        if pending in self.queue:
            self.queue.remove(pending)
            self._depth()

    def _depth(self) -> None:
        self.metrics.queue_depth.labels(self.name).set(len(self.queue))

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
            if self.queue and self.idle:
                queued = sum(p.count for p in self.queue)
                waited = time.monotonic() - self.queue[0].enqueued
                if len(self.idle) == self.instances or queued >= self.target or waited >= delay:
                    return
                timeout = delay - waited
            else:
                timeout = None
            self.wakeup.clear()
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout)
            except TimeoutError:
                return

    def _take(self) -> list[_Pending]:
        """The next batch from the head of the queue; expired requests are failed on the way."""
        now = time.monotonic()
        batch: list[_Pending] = []
        total = 0
        for pending in list(self.queue):
            if pending.deadline is not None and now >= pending.deadline and not pending.future.done():
                pending.future.set_exception(DeadlineExpired(f"deadline passed after {now - pending.enqueued:.3f} "
                                                             "s in the queue; not run"))
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
        works = [p.work for p in batch]
        try:
            results = await asyncio.get_running_loop().run_in_executor(self.executor, self._execute_timed, works,
                                                                       instance)
        except Exception as error:  # the batch fails, the batcher carries on
            results = [error] * len(batch)
        self.running = [pending for pending in self.running if pending not in batch]
        self.metrics.batch_size.labels(self.name).observe(sum(p.count for p in batch))
        for pending, result in zip(batch, results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)

    def _execute_timed(self, works: list, instance: int) -> list:
        started = time.perf_counter()
        results = self.execute(works, instance)
        self.metrics.compute_seconds.labels(self.name).observe(time.perf_counter() - started)
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
