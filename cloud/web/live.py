"""Live results for every open browser, from one subscription to the cloud.

One task follows ``Analytics.Subscribe(live_only=True)`` and fans each result
out to the browsers' event streams. Each browser has a small bounded mailbox;
when a browser does not keep up, its oldest waiting events are dropped (and
counted) so a stalled tab never slows the cloud, the feed or the other tabs.
If the cloud goes away the feed reconnects with capped, jittered backoff and
tells the browsers, which show "reconnecting".
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import random
from typing import Any

import grpc
from grpc import aio

from layercast.cloud.results.cache import LruCache
from layercast.cloud.web.client import CloudClient
from layercast.cloud.web.results import depth_metres, depth_range, result_json
from layercast.shared.rpc import common_pb2

log = logging.getLogger(__name__)


class BrowserStream:
    """One browser's mailbox: at most ``maxlen`` events, the oldest dropped first."""

    def __init__(self, maxlen: int) -> None:
        self._items: collections.deque[str] = collections.deque(maxlen=maxlen)
        self._ready = asyncio.Event()
        self.closed = False
        self.dropped = 0
        self.delivered = 0

    def push(self, event: str) -> None:
        """Never blocks: a full mailbox loses its oldest event."""
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(event)
        self._ready.set()

    def close(self) -> None:
        """End the stream: ``take`` returns None once the waiting events are taken."""
        self.closed = True
        self._ready.set()

    async def take(self, timeout: float) -> list[str] | None:
        """Every waiting event, waiting up to ``timeout`` s for one (empty list on timeout,
        None once closed)."""
        if not self._items and self.closed:
            return None
        if not self._items:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout)
        out = list(self._items)
        self._items.clear()
        self.delivered += len(out)
        return out


def sse(event: str, data: Any) -> str:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class LiveFeed:
    """The page's single live subscription and its fan-out."""

    def __init__(
        self, client: CloudClient, *, mailbox: int, max_streams: int, recent_per_camera: int = 64
    ) -> None:
        self._client = client
        self._mailbox = mailbox
        self.max_streams = max_streams
        self._recent_per_camera = recent_per_camera
        self.streams: set[BrowserStream] = set()
        #: Newest result summary per camera (for a page opened between two frames).
        self.latest: dict[str, dict[str, Any]] = {}
        self._recent: dict[str, collections.OrderedDict[int, common_pb2.Result]] = {}
        self._looked_up: LruCache[tuple[str, int], common_pb2.Result] = LruCache(
            8 << 20, lambda r: r.ByteSize()
        )
        self.state = "connecting"
        self.state_message = "connecting to the cloud"
        self.results_seen = 0
        self.closing = False
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="layercast-web-live-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.close_streams()

    def close_streams(self) -> None:
        """Tell every browser the page is stopping and end their event streams."""
        self.closing = True
        for s in list(self.streams):
            s.push(sse("status", {"state": "closed", "message": "the operator page is shutting down"}))
            s.close()

    # -- browsers --------------------------------------------------------------------------------
    def open_stream(self) -> BrowserStream | None:
        """A mailbox for a new browser, or None when ``max_streams`` are already open."""
        if self.closing or len(self.streams) >= self.max_streams:
            return None
        s = BrowserStream(self._mailbox)
        s.push(sse("status", self.status()))
        self.streams.add(s)
        return s

    def close_stream(self, stream: BrowserStream) -> None:
        self.streams.discard(stream)

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "message": self.state_message}

    def _broadcast(self, event: str) -> None:
        for s in self.streams:
            s.push(event)

    def _set_state(self, state: str, message: str) -> None:
        if (state, message) != (self.state, self.state_message):
            self.state, self.state_message = state, message
            self._broadcast(sse("status", self.status()))

    # -- results ---------------------------------------------------------------------------------
    async def result(self, camera_id: str, sequence: int) -> common_pb2.Result | None:
        """A frame's result: from the live feed's recent ones, else asked of the cloud."""
        hit = self._recent.get(camera_id, {}).get(sequence) or self._looked_up.get((camera_id, sequence))
        if hit is not None:
            return hit
        found = await self._client.result(camera_id, sequence)
        if found is not None:
            self._looked_up.put((camera_id, sequence), found)
        return found

    async def summary(self, result: common_pb2.Result) -> dict[str, Any]:
        """``result_json`` with the depth range computed off the event loop."""
        rng = None
        if result.HasField("depth"):
            try:
                rng = await asyncio.to_thread(lambda: depth_range(depth_metres(result.depth)))
            except Exception as exc:  # a bad depth map should not stop the feed
                log.warning("cannot read the depth map of %s/%d: %s", result.camera_id, result.sequence, exc)
        return result_json(result, rng)

    async def _on_result(self, result: common_pb2.Result) -> None:
        self.results_seen += 1
        ring = self._recent.setdefault(result.camera_id, collections.OrderedDict())
        ring[result.sequence] = result
        while len(ring) > self._recent_per_camera:
            ring.popitem(last=False)
        data = await self.summary(result)
        prev = self.latest.get(result.camera_id)
        if prev is None or prev["sequence"] <= result.sequence:
            self.latest[result.camera_id] = data
        self._broadcast(sse("result", data))

    async def _run(self) -> None:
        backoff = 0.5
        loop = asyncio.get_running_loop()
        while True:
            call = self._client.subscribe_live()
            # A live subscription sends nothing until a result: call it "live" once it stood for a second.
            probe = loop.call_later(
                1.0, lambda c=call: None if c.done() else self._set_state("live", "receiving live results")
            )
            try:
                async for event in call:
                    self._set_state("live", "receiving live results")
                    backoff = 0.5
                    if event.WhichOneof("kind") == "result":
                        await self._on_result(event.result)
                    else:  # lagged: resubscribe (a live view skips what it missed)
                        break
                else:  # the stream ended: the cloud shut down gracefully
                    self._set_state("reconnecting", "the cloud ended the live stream; reconnecting")
            except aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    continue  # told we lagged: resubscribe at once
                self._set_state("reconnecting", f"cloud unavailable ({exc.code().name}): {exc.details()}")
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    log.warning("live subscription failed: %s: %s", exc.code().name, exc.details())
            finally:
                probe.cancel()
                call.cancel()
            if self.state == "live":
                continue
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, 10.0)
