"""The Analytics servicer's handling of a lagging subscriber: a Lagged event, then RESOURCE_EXHAUSTED."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from layercast.cloud.results.hub import Hub
from layercast.cloud.results.sqlite import SqliteStore
from layercast.cloud.results.store import AsyncStore
from layercast.cloud.rpc.servicers.analytics import AnalyticsServicer
from layercast.shared.rpc import analytics_pb2, common_pb2


class Aborted(Exception):
    pass


class Context:
    """Records how the servicer ends the call (what grpc.aio's context.abort does: raise)."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self.code, self.details = code, details
        raise Aborted(details)


async def test_lagging_subscriber_gets_lagged_then_resource_exhausted(tmp_path):
    store = AsyncStore(SqliteStore(tmp_path / "s.db"))
    hub = Hub(store, queue_size=2)
    servicer = AnalyticsServicer(hub=hub, pipeline=None, engine=None, executor=None)  # type: ignore[arg-type]
    ctx = Context()
    stream = servicer.Subscribe(analytics_pb2.SubscribeRequest(live_only=True), ctx)
    first = asyncio.create_task(anext(stream))
    while hub.subscriber_count < 1:
        await asyncio.sleep(0.01)
    for seq in range(1, 10):  # the consumer reads nothing while these arrive
        hub.publish(common_pb2.Result(camera_id="a", sequence=seq))
    events = [await first]
    with pytest.raises(Aborted):
        async for ev in stream:
            events.append(ev)
    # the one taken before the burst; queued results are dropped with the subscription (the store has them)
    assert [e.result.sequence for e in events[:-1]] == [1]
    lagged = events[-1].lagged
    assert dict(lagged.resume_after) == {"a": 1} and lagged.message
    assert ctx.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    await store.close()
