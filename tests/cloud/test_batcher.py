"""Dynamic batching: size and delay limits, per-camera order across workers, failures, drain."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest

from layercast.cloud.ingest.batcher import Batcher
from layercast.shared.errors import ServiceClosing


class Recorder:
    """A real infer function: sleeps like a model would and records every batch it saw."""

    def __init__(self, sleep_s: float | tuple[float, float] = 0.0, seed: int = 0) -> None:
        self.batches: list[list[tuple[str, int]]] = []
        self.sleep_s = sleep_s
        self.threads: set[str] = set()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def __call__(self, items: list[tuple[str, int]]) -> list[object]:
        with self._lock:
            self.batches.append(list(items))
            self.threads.add(threading.current_thread().name)
            s = self.sleep_s if isinstance(self.sleep_s, float) else self._rng.uniform(*self.sleep_s)
        time.sleep(s)
        return [ValueError(f"bad {cam}/{seq}") if seq < 0 else f"{cam}/{seq}" for cam, seq in items]


async def test_full_batches_leave_without_waiting_for_the_delay():
    rec = Recorder()
    b = Batcher(rec, max_batch_size=4, max_queue_delay_s=10.0)  # the delay never expires in this test
    t0 = time.monotonic()
    futs = [await b.submit((f"cam{i}", 1), key=f"cam{i}") for i in range(1, 9)]
    results = await asyncio.wait_for(asyncio.gather(*futs), 5.0)
    assert time.monotonic() - t0 < 5.0
    assert results == [f"cam{i}/1" for i in range(1, 9)]
    assert [len(x) for x in rec.batches] == [4, 4]
    assert all(name.startswith("layercast-infer") for name in rec.threads)  # never on the event loop
    await b.close()


async def test_a_lone_item_waits_the_queue_delay_then_goes_alone():
    rec = Recorder()
    b = Batcher(rec, max_batch_size=8, max_queue_delay_s=0.2)
    t0 = time.monotonic()
    fut = await b.submit(("a", 1), key="a")
    assert await asyncio.wait_for(fut, 5.0) == "a/1"
    waited = time.monotonic() - t0
    assert 0.18 <= waited < 2.0
    assert rec.batches == [[("a", 1)]]
    [record] = list(b.history)
    assert record.size == 1 and record.queue_delays_s[0] >= 0.18 and record.compute_s < 1.0
    await b.close()


async def test_items_arriving_within_the_delay_share_a_batch():
    rec = Recorder()
    b = Batcher(rec, max_batch_size=16, max_queue_delay_s=0.3)
    futs = []
    for i in range(5):
        futs.append(await b.submit((f"cam{i}", 1), key=f"cam{i}"))
        await asyncio.sleep(0.02)
    await asyncio.gather(*futs)
    assert [len(x) for x in rec.batches] == [5]
    await b.close()


async def test_zero_delay_dispatches_at_once_and_batches_grow_while_workers_are_busy():
    rec = Recorder(sleep_s=0.15)
    b = Batcher(rec, max_batch_size=8, max_queue_delay_s=0.0, workers=1)
    first = await b.submit(("a", 1), key="a")
    await asyncio.sleep(0.05)  # the first batch (of one) is computing now
    rest = [await b.submit((f"cam{i}", 1), key=f"cam{i}") for i in range(2, 8)]
    await asyncio.gather(first, *rest)
    assert [len(x) for x in rec.batches] == [1, 6]
    await b.close()


async def test_per_camera_order_holds_with_concurrent_workers_finishing_out_of_order():
    rec = Recorder(sleep_s=(0.0, 0.05), seed=3)
    released: list[tuple[str, int]] = []

    async def sink(done):
        await asyncio.sleep(0)  # a sink that yields, like a store write
        released.extend(d.item for d in done)

    b = Batcher(rec, max_batch_size=3, max_queue_delay_s=0.002, workers=4, on_complete=sink)
    cams = ["a", "b", "c", "d"]

    async def camera(cam: str) -> list[asyncio.Future]:
        futs = []
        for seq in range(1, 31):
            futs.append(await b.submit((cam, seq), key=cam))
            await asyncio.sleep(random.Random(hash((cam, seq))).uniform(0, 0.004))
        return futs

    all_futs = await asyncio.gather(*(camera(c) for c in cams))
    await asyncio.wait_for(asyncio.gather(*[f for fs in all_futs for f in fs]), 30.0)
    assert len(released) == 120
    for cam in cams:
        assert [s for c, s in released if c == cam] == list(range(1, 31))
    # the test means something only if batches really overlapped and mixed cameras
    assert len(rec.threads) > 1
    assert any(len({c for c, _ in batch}) > 1 for batch in rec.batches)
    assert max(len(x) for x in rec.batches) <= 3
    await b.close()


async def test_one_key_runs_one_item_at_a_time_in_order_and_unkeyed_items_are_not_held_back():
    running: dict[str, int] = {}
    overlaps: list[str] = []
    lock = threading.Lock()
    rec = Recorder(sleep_s=0.03)

    def infer(items):
        with lock:
            for cam, _ in items:
                if cam != "x":
                    running[cam] = running.get(cam, 0) + 1
                    if running[cam] > 1:
                        overlaps.append(cam)
        try:
            return rec(items)
        finally:
            with lock:
                for cam, _ in items:
                    if cam != "x":
                        running[cam] -= 1

    b = Batcher(infer, max_batch_size=4, max_queue_delay_s=0.0, workers=3)
    futs = []
    for seq in range(1, 7):
        futs.append(await b.submit(("a", seq), key="a"))
        futs.append(await b.submit(("b", seq), key="b"))
    adhoc = [await b.submit(("x", i)) for i in range(3)]
    await asyncio.wait_for(asyncio.gather(*futs, *adhoc), 10.0)
    assert not overlaps  # never two items of a camera at once
    for batch in rec.batches:
        keyed = [c for c, _ in batch if c != "x"]
        assert len(keyed) == len(set(keyed))  # never two of a camera in one batch
    for cam in ("a", "b"):
        assert [s for batch in rec.batches for c, s in batch if c == cam] == list(range(1, 7))
    # the unkeyed items went in the first batches, not after the twelve camera items
    first_x = next(i for i, batch in enumerate(rec.batches) if any(c == "x" for c, _ in batch))
    assert first_x <= 1
    await b.close()


async def test_one_bad_item_fails_alone_and_a_crashing_batch_fails_whole():
    rec = Recorder()
    b = Batcher(rec, max_batch_size=3, max_queue_delay_s=0.05)
    futs = [await b.submit((c, s), key=c) for c, s in (("a", 1), ("b", -2), ("c", 3))]
    outcomes = await asyncio.gather(*futs, return_exceptions=True)
    assert outcomes[0] == "a/1" and outcomes[2] == "c/3"
    assert isinstance(outcomes[1], ValueError)
    assert b.history[-1].failed == 1

    def crash(items):
        raise RuntimeError("model exploded")

    b2 = Batcher(crash, max_batch_size=2, max_queue_delay_s=0.01)
    futs = [await b2.submit(i) for i in range(2)]
    outcomes = await asyncio.gather(*futs, return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    await b.close()
    await b2.close()


async def test_drain_finishes_everything_then_refuses_new_work():
    rec = Recorder(sleep_s=0.05)
    done_items = []

    async def sink(done):
        done_items.extend(d.item for d in done)

    b = Batcher(rec, max_batch_size=2, max_queue_delay_s=1.0, on_complete=sink)
    for i in range(5):
        await b.submit(("a", i), key="a")
    assert await b.close(timeout=10.0)
    assert done_items == [("a", i) for i in range(5)]
    with pytest.raises(ServiceClosing):
        await b.submit(("a", 9), key="a")


async def test_submit_waits_when_the_queue_is_full():
    gate = threading.Event()

    def slow(items):
        gate.wait(5.0)
        return list(items)

    b = Batcher(slow, max_batch_size=1, max_queue_delay_s=0.0, queue_capacity=2)
    await b.submit(1)
    await asyncio.sleep(0.05)  # item 1 is being computed; the queue is empty again
    await b.submit(2)
    await b.submit(3)
    blocked = asyncio.create_task(b.submit(4))
    await asyncio.sleep(0.1)
    assert not blocked.done()  # back-pressure: the caller waits
    gate.set()
    await asyncio.wait_for(blocked, 5.0)
    assert await b.close(timeout=5.0)
