"""Dynamic batching across cameras, as Triton's dynamic batcher does.

Items wait in one queue. A batch leaves when ``max_batch_size`` items wait or
when the oldest has waited ``max_queue_delay``; while every worker is busy the
queue keeps filling, so batches grow under load. ``infer_fn`` runs on a worker
thread (never on the event loop). Items that share a *key* (a camera) come
out in the order they were submitted even when several workers finish out of
order: completions wait in a per-key reorder buffer and are released to the
``on_complete`` sink (called by one task, batch by batch) only once every
earlier item of that key is out.

Items of one key are also *run* one at a time and in order (a camera's predicted frames are
decoded against the frame before): the dispatcher skips an item whose key already has an item
in the batch being built or in a batch in flight, and otherwise keeps FIFO order. Items without
a key are never held back.

Items submitted with ``low_priority`` (one-off Analytics.Infer requests) wait in a queue of their
own, bounded like the first, and are batched only when no other item waits: camera frames never
wait behind them for more than the one batch already running.

``infer_fn(items)`` returns one entry per item: a result, or an exception
instance for an item that failed on its own. If it raises, every item of the
batch fails with that exception.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from layercast.shared.errors import ServiceClosing

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchRecord:
    """What one batch cost (the three figures Triton reports separately)."""

    size: int
    queue_delays_s: tuple[float, ...]  # per item: dispatch time - submit time
    compute_s: float  # wall time of infer_fn
    failed: int  # items that came back as errors


@dataclass
class Done(Generic[T, R]):
    """One finished item as handed to the sink."""

    item: T
    key: Hashable | None
    result: R | None
    error: BaseException | None
    submitted: float  # time.monotonic() at submit


@dataclass
class _Entry(Generic[T, R]):
    item: T
    key: Hashable | None
    submitted: float
    future: asyncio.Future[R]
    done: Done[T, R] | None = None
    index: int = field(default=0)


class Batcher(Generic[T, R]):
    """Batches items for ``infer_fn`` and releases results in per-key submission order."""

    def __init__(
        self,
        infer_fn: Callable[[list[T]], Sequence[R | BaseException]],
        *,
        max_batch_size: int = 8,
        max_queue_delay_s: float = 0.01,
        workers: int = 1,
        queue_capacity: int = 1024,
        on_complete: Callable[[list[Done[T, R]]], Awaitable[None]] | None = None,
        on_batch: Callable[[BatchRecord], None] | None = None,
        executor: Executor | None = None,
    ) -> None:
        if max_batch_size < 1 or workers < 1 or queue_capacity < 1 or max_queue_delay_s < 0:
            raise ValueError(
                "max_batch_size, workers and queue_capacity must be >= 1, max_queue_delay_s >= 0"
            )
        self._infer_fn = infer_fn
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.workers = workers
        self._on_complete = on_complete
        self._on_batch = on_batch
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="layercast-infer"
        )
        self._queue: collections.deque[_Entry[T, R]] = collections.deque()
        self._low: collections.deque[_Entry[T, R]] = collections.deque()
        self._capacity = queue_capacity
        self._space = asyncio.Semaphore(queue_capacity)
        self._low_space = asyncio.Semaphore(queue_capacity)
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(workers)
        self._order: dict[Hashable, collections.deque[_Entry[T, R]]] = {}
        self._running: collections.Counter[Hashable] = collections.Counter()  # keys in flight
        self._released: asyncio.Queue[list[_Entry[T, R]] | None] = asyncio.Queue()
        self._counter = itertools.count()
        self._inflight: set[asyncio.Task[None]] = set()
        self._outstanding = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._sink: asyncio.Task[None] | None = None
        #: Every batch's record, newest last (bounded).
        self.history: collections.deque[BatchRecord] = collections.deque(maxlen=10_000)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the dispatcher and sink tasks (call from the event loop)."""
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="batcher-dispatch")
            self._sink = asyncio.create_task(self._sink_loop(), name="batcher-sink")

    @property
    def started(self) -> bool:
        return self._dispatcher is not None

    @property
    def queued(self) -> int:
        """Items waiting for a batch."""
        return len(self._queue) + len(self._low)

    @property
    def outstanding(self) -> int:
        """Items submitted and not yet released to the sink."""
        return self._outstanding

    async def submit(
        self, item: T, key: Hashable | None = None, *, low_priority: bool = False
    ) -> asyncio.Future[R]:
        """Queue ``item``; waits while the queue is full. The returned future resolves
        (after the sink has handled the item) with its result or error. A ``low_priority`` item
        is batched only when no other item waits."""
        if self._closing:
            raise ServiceClosing("the batcher is closing and accepts no new work")
        self.start()
        space = self._low_space if low_priority else self._space
        await space.acquire()
        if self._closing:
            space.release()
            raise ServiceClosing("the batcher is closing and accepts no new work")
        loop = asyncio.get_running_loop()
        entry: _Entry[T, R] = _Entry(
            item, key, time.monotonic(), loop.create_future(), index=next(self._counter)
        )
        if key is not None:
            self._order.setdefault(key, collections.deque()).append(entry)
        (self._low if low_priority else self._queue).append(entry)
        self._outstanding += 1
        self._idle.clear()
        self._arrived.set()
        return entry.future

    async def drain(self, timeout: float | None = None) -> bool:
        """Stop accepting work and wait until everything submitted has reached the sink.
        Returns False when ``timeout`` passed first."""
        self._closing = True
        self._arrived.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float | None = None) -> bool:
        """Drain, then stop the tasks and the executor."""
        ok = await self.drain(timeout)
        for task in (self._dispatcher, self._sink):
            if task is not None:
                task.cancel()
        for task in (self._dispatcher, self._sink):
            if task is not None:
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        if self._own_executor:
            self._executor.shutdown(wait=ok, cancel_futures=not ok)
        return ok

    # -- dispatch ------------------------------------------------------------------------------
    def _eligible(self, queue: collections.deque[_Entry[T, R]], limit: int) -> list[_Entry[T, R]]:
        """Up to ``limit`` entries of ``queue`` in FIFO order, at most one per key and none whose
        key is in flight."""
        picked: list[_Entry[T, R]] = []
        keys: set[Hashable] = set()
        for entry in queue:
            if len(picked) >= limit:
                break
            if entry.key is not None:
                if entry.key in keys or self._running[entry.key]:
                    continue
                keys.add(entry.key)
            picked.append(entry)
        return picked

    async def _dispatch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Wait until some item may run (an item whose key is in flight waits for that batch).
            while not self._eligible(self._queue, 1) and not self._eligible(self._low, 1):
                self._arrived.clear()
                await self._arrived.wait()
            # Wait for a full batch or until the oldest item's delay has passed (low-priority
            # items alone go as soon as a worker is free).
            first = self._eligible(self._queue, 1)
            deadline = first[0].submitted + self.max_queue_delay_s if first else 0.0
            while (
                first
                and len(self._eligible(self._queue, self.max_batch_size)) < self.max_batch_size
                and not self._closing
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            await self._slots.acquire()  # while workers are busy, the batch keeps growing
            # Other items first; low-priority ones only when none may run.
            batch = self._eligible(self._queue, self.max_batch_size)
            queue, space = self._queue, self._space
            if not batch:
                batch = self._eligible(self._low, self.max_batch_size)
                queue, space = self._low, self._low_space
            if not batch:
                self._slots.release()
                continue
            taken = {id(e) for e in batch}
            kept = [e for e in queue if id(e) not in taken]
            queue.clear()
            queue.extend(kept)
            for entry in batch:
                space.release()
                if entry.key is not None:
                    self._running[entry.key] += 1
            task = loop.create_task(self._run_batch(batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _run_batch(self, batch: list[_Entry[T, R]]) -> None:
        loop = asyncio.get_running_loop()
        dispatched = time.monotonic()
        items = [e.item for e in batch]
        outcomes: Sequence[Any]
        try:
            start = time.monotonic()
            try:
                outcomes = await loop.run_in_executor(self._executor, self._infer_fn, items)
                if len(outcomes) != len(items):
                    raise RuntimeError(f"infer_fn returned {len(outcomes)} results for {len(items)} items")
            except Exception as exc:  # the whole batch failed
                log.exception("batch of %d failed", len(items))
                outcomes = [exc] * len(items)
            compute = time.monotonic() - start
        finally:
            self._slots.release()
            for entry in batch:
                if entry.key is not None:
                    self._running[entry.key] -= 1
                    if not self._running[entry.key]:
                        del self._running[entry.key]
            self._arrived.set()  # items of these keys may run now
        failed = 0
        for entry, out in zip(batch, outcomes, strict=True):
            if isinstance(out, BaseException):
                failed += 1
                entry.done = Done(entry.item, entry.key, None, out, entry.submitted)
            else:
                entry.done = Done(entry.item, entry.key, out, None, entry.submitted)
        record = BatchRecord(len(batch), tuple(dispatched - e.submitted for e in batch), compute, failed)
        self.history.append(record)
        if self._on_batch is not None:
            try:
                self._on_batch(record)
            except Exception:
                log.exception("on_batch observer failed")
        self._release(batch)

    def _release(self, batch: list[_Entry[T, R]]) -> None:
        """Hand finished items to the sink, never ahead of an earlier item of the same key."""
        ready: list[_Entry[T, R]] = []
        keys: list[Hashable] = []
        for entry in batch:
            if entry.key is None:
                ready.append(entry)
            elif entry.key not in keys:
                keys.append(entry.key)
        for key in keys:
            pending = self._order[key]
            while pending and pending[0].done is not None:
                ready.append(pending.popleft())
            if not pending:
                del self._order[key]
        if ready:
            ready.sort(key=lambda e: e.index)
            self._released.put_nowait(ready)

    async def _sink_loop(self) -> None:
        while True:
            ready = await self._released.get()
            if ready is None:
                return
            done = [e.done for e in ready if e.done is not None]
            if self._on_complete is not None:
                try:
                    await self._on_complete(done)
                except Exception as exc:
                    log.exception("result sink failed for %d items", len(done))
                    for d in done:
                        if d.error is None:
                            d.error, d.result = exc, None
            for entry in ready:
                d = entry.done
                assert d is not None
                if not entry.future.done():
                    if d.error is not None:
                        entry.future.set_exception(d.error)
                        entry.future.exception()  # mark retrieved: callers may not await it
                    else:
                        entry.future.set_result(d.result)  # type: ignore[arg-type]
            self._outstanding -= len(ready)
            if self._outstanding == 0 and not self._queue and not self._low:
                self._idle.set()
