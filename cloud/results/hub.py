"""Result fan-out to subscribers: replay from the store, then live, in order, no duplicates.

Each subscriber owns a bounded queue. Publishing never waits: when a
subscriber's queue is full it is marked *lagged* and dropped from the fan-out,
so one slow consumer never slows the cameras or the other subscribers. It is
told with a :class:`Lagged` event carrying the last sequence delivered per
camera, and resumes from there (the store still has everything).

Handover from replay to live: the subscriber first pages through the store
without a live queue; when a page comes back short it registers its live
queue, reads the store once more (anything stored before registration), then
takes live results, skipping any whose sequence it has already delivered for
that camera. Results are written to the store *before* they are published and
published in store order, so nothing falls between the two and nothing
appears twice.

The log replayed is a :class:`ResultSource`: the store in embedded mode; with
several cloud replicas, the Redis Stream they all append to
(``layercast.cloud.cluster.results``), whose reader publishes into the hub in
stream order, which keeps the same guarantee.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from layercast.cloud.results.records import ReplayQuery, StoredResult
from layercast.shared.errors import ServiceClosing
from layercast.shared.rpc import common_pb2

log = logging.getLogger(__name__)


class ResultSource(Protocol):
    """The ordered log of results a subscriber replays (see :meth:`SqliteStore.results_after`)."""

    async def results_after(self, query: ReplayQuery) -> list[StoredResult]: ...


class ResultSink(Protocol):
    """Where the pipeline sends each stored result, in store order: the hub, or the shared log."""

    def publish(self, result: common_pb2.Result) -> None: ...


@dataclass(frozen=True)
class Lagged:
    """The subscriber fell behind; it should resume after ``resume_after``."""

    resume_after: dict[str, int]
    message: str


@dataclass(eq=False)
class _Subscription:
    cameras: frozenset[str] | None
    queue: asyncio.Queue[common_pb2.Result | None]
    lagged: bool = False
    closed: bool = False
    dropped: int = 0
    delivered: dict[str, int] = field(default_factory=dict)

    def wants(self, camera_id: str) -> bool:
        return self.cameras is None or camera_id in self.cameras


class Hub:
    """Fans results out to subscribers; see the module docstring for the guarantees."""

    def __init__(self, store: ResultSource, *, queue_size: int = 256, page_size: int = 256) -> None:
        self._store = store
        self.queue_size = queue_size
        self.page_size = page_size
        self._subs: set[_Subscription] = set()
        self._closed = False
        #: Subscribers cut off for lagging since start.
        self.lagged_total = 0

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    def lag(self) -> list[int]:
        """Queued results per live subscriber (how far each is behind)."""
        return [s.queue.qsize() for s in self._subs]

    def publish(self, result: common_pb2.Result) -> None:
        """Offer one stored result to every interested subscriber; never waits."""
        for sub in list(self._subs):
            if not sub.wants(result.camera_id):
                continue
            try:
                sub.queue.put_nowait(result)
            except asyncio.QueueFull:
                sub.lagged = True
                self._subs.discard(sub)
                self.lagged_total += 1
                log.info(
                    "subscriber lagged (queue of %d full); it will resume from the store", sub.queue.maxsize
                )

    def publish_many(self, results: Iterable[common_pb2.Result]) -> None:
        for r in results:
            self.publish(r)

    def close(self) -> None:
        """End every subscription (each ends with ServiceClosing)."""
        self._closed = True
        for sub in list(self._subs):
            sub.closed = True
            try:
                sub.queue.put_nowait(None)
            except asyncio.QueueFull:
                pass  # it will see the flag after its next item
        self._subs.clear()

    async def follow(
        self,
        *,
        cameras: Iterable[str] | None = None,
        resume_after: Mapping[str, int] | None = None,
        from_sequence: int = 0,
        live_only: bool = False,
        queue_size: int | None = None,
    ) -> AsyncIterator[common_pb2.Result | Lagged]:
        """Results for ``cameras`` (None or empty = all) after the resume points, then live ones.

        ``resume_after``: camera → last sequence seen; other cameras start at
        ``from_sequence`` (inclusive; 0 = oldest kept). Yields a final
        :class:`Lagged` and stops when the subscriber falls behind; raises
        ServiceClosing when the hub closes.
        """
        if self._closed:
            raise ServiceClosing("the server is shutting down")
        cams = frozenset(cameras) if cameras else None
        default_after = max(int(from_sequence) - 1, 0)
        delivered: dict[str, int] = {} if live_only else {k: int(v) for k, v in (resume_after or {}).items()}
        sub = _Subscription(cams, asyncio.Queue(maxsize=queue_size or self.queue_size), delivered=delivered)
        cursor = 0
        try:
            if not live_only:
                # Phase 1: replay without a live queue, page by page.
                while True:
                    page = await self._page(sub, default_after, cursor)
                    for stored in page:
                        cursor = stored.cursor
                        yield self._deliver(sub, common_pb2.Result.FromString(stored.data))
                    if len(page) < self.page_size:
                        break
            if self._closed:
                raise ServiceClosing("the server is shutting down")
            self._subs.add(sub)
            if not live_only:
                # Phase 2: whatever was stored before the live queue existed.
                while True:
                    page = await self._page(sub, default_after, cursor)
                    for stored in page:
                        cursor = stored.cursor
                        if stored.sequence > sub.delivered.get(stored.camera_id, default_after):
                            yield self._deliver(sub, common_pb2.Result.FromString(stored.data))
                    if len(page) < self.page_size:
                        break
            # Phase 3: live.
            while True:
                if sub.lagged:
                    yield Lagged(
                        dict(sub.delivered),
                        f"subscriber fell more than {sub.queue.maxsize} results behind; resume after the given sequences",
                    )
                    return
                if sub.closed:
                    raise ServiceClosing("the server is shutting down")
                item = await sub.queue.get()
                if item is None:
                    continue
                if item.sequence > sub.delivered.get(item.camera_id, default_after):
                    yield self._deliver(sub, item)
        finally:
            self._subs.discard(sub)

    async def _page(self, sub: _Subscription, default_after: int, cursor: int) -> list[StoredResult]:
        return await self._store.results_after(
            ReplayQuery(sub.cameras, dict(sub.delivered), default_after, cursor, self.page_size)
        )

    @staticmethod
    def _deliver(sub: _Subscription, result: common_pb2.Result) -> common_pb2.Result:
        sub.delivered[result.camera_id] = result.sequence
        return result
