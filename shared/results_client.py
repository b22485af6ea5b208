"""The client side of ``Analytics.Subscribe``: results in order, resumed after a lag.

The cloud tells a subscriber that fell behind with a ``Lagged`` event (its resume points) and
ends the stream with RESOURCE_EXHAUSTED. :func:`results` subscribes again from the last sequence
seen per camera, so a consumer misses nothing the cloud still keeps and sees nothing twice::

    async for result in results(AnalyticsStub(channel), resume_after={"door-1": 41}):
        ...

With ``resume_on_lag=False`` a lag raises :class:`SubscriberLagged` instead.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc
from grpc import aio

from layercast.shared.rpc import analytics_pb2, common_pb2


class SubscriberLagged(Exception):
    """The cloud cut the subscription loose; ``resume_after`` is where to pick up."""

    def __init__(self, resume_after: Mapping[str, int], message: str) -> None:
        super().__init__(message)
        self.resume_after = dict(resume_after)


async def results(
    stub: Any,
    *,
    cameras: Iterable[str] = (),
    resume_after: Mapping[str, int] | None = None,
    from_sequence: int = 0,
    live_only: bool = False,
    metadata: Sequence[tuple[str, str]] | None = None,
    resume_on_lag: bool = True,
    on_lag: Callable[[SubscriberLagged], None] | None = None,
    retry_unavailable: bool = False,
) -> AsyncIterator[common_pb2.Result]:
    """Every result of ``cameras`` (all when empty) after the resume points, then live ones.

    ``on_lag`` is told of each lag before the subscription resumes. With ``retry_unavailable`` a
    cloud that cannot be reached is asked again after a jittered back-off (0.5 s doubling to 30 s);
    other errors end the iteration with their ``aio.AioRpcError``."""
    resume = dict(resume_after or {})
    cameras = list(cameras)
    received = 0
    delay = 0.5
    while True:
        request = analytics_pb2.SubscribeRequest(
            camera_ids=cameras,
            resume_after=resume,
            from_sequence=from_sequence,
            live_only=live_only and received == 0,
        )
        call = stub.Subscribe(request, metadata=metadata)
        lagged: SubscriberLagged | None = None
        try:
            async for event in call:
                if event.WhichOneof("kind") == "lagged":
                    lagged = SubscriberLagged(event.lagged.resume_after, event.lagged.message)
                    break
                result = event.result
                resume[result.camera_id] = result.sequence
                received += 1
                delay = 0.5
                yield result
        except aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and lagged is None and resume_on_lag:
                continue  # the stream ended after a Lagged event this side had not read yet: resume
            if exc.code() != grpc.StatusCode.UNAVAILABLE or not retry_unavailable:
                raise
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 30.0)
            continue
        finally:
            call.cancel()
        if lagged is None:
            continue  # the stream ended without a lag (a cloud stopping): subscribe again
        resume.update(lagged.resume_after)
        if on_lag is not None:
            on_lag(lagged)
        if not resume_on_lag:
            raise lagged
