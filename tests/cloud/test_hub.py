"""Result fan-out: lagging subscribers are cut loose, replay hands over to live without gaps or duplicates."""

from __future__ import annotations

import asyncio

import pytest

from layercast.cloud.results.hub import Hub, Lagged
from layercast.cloud.results.records import ResultRecord
from layercast.cloud.results.sqlite import SqliteStore
from layercast.cloud.results.store import AsyncStore
from layercast.shared.errors import ServiceClosing
from layercast.shared.rpc import common_pb2
from tests.cloud.conftest import stored_frame


@pytest.fixture
async def store(tmp_path):
    s = AsyncStore(SqliteStore(tmp_path / "hub.db"))
    yield s
    await s.close()


async def produce(store: AsyncStore, hub: Hub, cam: str, seq: int) -> None:
    """What the pipeline does for each result: store it, then publish it."""
    await store.put_frame(stored_frame(cam, seq, b"x", capture_time_us=seq, received_us=seq, size=(8, 8)))
    r = common_pb2.Result(camera_id=cam, sequence=seq, task="detection")
    await store.put_results([ResultRecord(cam, seq, seq, r.SerializeToString())])
    hub.publish(r)


async def collect(gen, n: int, timeout: float = 20.0) -> list:
    out = []

    async def run():
        async for ev in gen:
            out.append(ev)
            if len(out) == n:
                return

    await asyncio.wait_for(run(), timeout)
    return out


async def test_slow_subscriber_lags_alone_and_resumes_from_the_store(store):
    hub = Hub(store, queue_size=5)
    fast = hub.follow()
    slow = hub.follow()
    fast_task = asyncio.create_task(collect(fast, 50))
    slow_first = asyncio.create_task(anext(slow))
    while hub.subscriber_count < 2:
        await asyncio.sleep(0.01)

    for seq in range(1, 51):
        await produce(store, hub, "a", seq)  # never waits on any subscriber
    got_fast = await fast_task
    assert [r.sequence for r in got_fast] == list(range(1, 51))

    first = await slow_first
    rest = [ev async for ev in slow]  # it ends on its own after the Lagged event
    assert isinstance(rest[-1], Lagged)
    delivered = [first, *rest[:-1]]
    assert [r.sequence for r in delivered] == list(range(1, len(delivered) + 1))
    assert len(delivered) <= 6  # one taken before the burst plus at most a full queue
    assert rest[-1].resume_after == {"a": delivered[-1].sequence}
    assert hub.lagged_total == 1 and hub.subscriber_count == 1  # only the fast one is still fanned out to
    await fast.aclose()
    assert hub.subscriber_count == 0

    resumed = await collect(hub.follow(resume_after=rest[-1].resume_after), 50 - len(delivered))
    assert [r.sequence for r in delivered + resumed] == list(range(1, 51))


async def test_replay_hands_over_to_live_without_gaps_or_duplicates(store):
    hub = Hub(store, queue_size=10_000, page_size=16)
    for seq in range(1, 151):
        for cam in ("a", "b"):
            await produce(store, hub, cam, seq)

    async def producer():
        for seq in range(151, 301):
            for cam in ("a", "b"):
                await produce(store, hub, cam, seq)
            await asyncio.sleep(0)

    prod = asyncio.create_task(producer())
    got = await collect(hub.follow(), 600, timeout=60.0)
    await prod
    for cam in ("a", "b"):
        assert [r.sequence for r in got if r.camera_id == cam] == list(range(1, 301))
    # the handover really happened while results were being produced
    assert prod.done()


async def test_resume_points_filters_and_live_only(store):
    hub = Hub(store, queue_size=100)
    for seq in range(1, 6):
        for cam in ("a", "b", "c"):
            await produce(store, hub, cam, seq)

    gen = hub.follow(cameras=["a", "b"], resume_after={"a": 3}, from_sequence=5)
    got = await collect(gen, 3)
    assert sorted((r.camera_id, r.sequence) for r in got) == [("a", 4), ("a", 5), ("b", 5)]
    await gen.aclose()

    live = hub.follow(live_only=True)
    first = asyncio.create_task(anext(live))
    while hub.subscriber_count < 1:
        await asyncio.sleep(0.01)
    await produce(store, hub, "c", 6)
    r = await asyncio.wait_for(first, 5.0)
    assert (r.camera_id, r.sequence) == ("c", 6)
    await live.aclose()
    assert hub.subscriber_count == 0


async def test_close_ends_subscriptions(store):
    hub = Hub(store)
    gen = hub.follow()
    pending = asyncio.create_task(anext(gen))
    while hub.subscriber_count < 1:
        await asyncio.sleep(0.01)
    hub.close()
    with pytest.raises(ServiceClosing):
        await asyncio.wait_for(pending, 5.0)
    with pytest.raises(ServiceClosing):
        await anext(hub.follow())
