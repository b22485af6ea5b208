"""Connected cameras and the enhancement requests sent down their streams.

A :class:`CameraSession` is one open EdgeLink stream: what the camera said in
its Hello and the queue of messages going down to it. The
:class:`SessionRegistry` maps each camera id to its current session (a new
stream from the same camera supersedes the old one). The
:class:`EnhancementRouter` sends an EnhancementRequest down the right stream,
matches the answer by request id and turns every outcome into a typed error
the servicers map to a status: camera offline → UNAVAILABLE, frame expired or
unknown at the edge → NOT_FOUND, no answer in time → DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from layercast.shared.clock import now_us
from layercast.shared.errors import (
    CameraOffline,
    EdgeStoreFailed,
    FrameExpired,
    FrameNotFound,
    PermissionDenied,
    RequestTimeout,
)
from layercast.shared.rpc import edge_pb2

log = logging.getLogger(__name__)


#: Messages queued down one camera's stream at most, unless the session is given another queue.
DEFAULT_OUTGOING_QUEUE = 1024


@dataclass(eq=False)
class CameraSession:
    """One open EdgeLink stream of one camera."""

    camera_id: str
    hello: edge_pb2.Hello
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    connected_us: int = field(default_factory=now_us)
    last_seen_us: int = field(default_factory=now_us)
    #: Messages going down the stream, bounded (``limits.camera_outgoing_queue``): a camera that
    #: stops reading has its stream ended rather than the queue growing.
    outgoing: asyncio.Queue[edge_pb2.CloudMessage | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=DEFAULT_OUTGOING_QUEUE)
    )
    #: Set when the stream should end: (grpc status name or None for OK, message).
    end_reason: tuple[str | None, str] | None = None
    #: Latest heartbeat figures from the edge.
    queued_frames: int = 0
    dropped_frames: int = 0

    @property
    def closed(self) -> bool:
        return self.end_reason is not None

    def send(self, message: edge_pb2.CloudMessage) -> bool:
        """Queue a message down the stream; False when the session has ended."""
        if self.closed:
            return False
        try:
            self.outgoing.put_nowait(message)
        except asyncio.QueueFull:
            self.end(
                "RESOURCE_EXHAUSTED",
                f"the camera does not read its stream: {self.outgoing.maxsize} messages are waiting "
                "(limits.camera_outgoing_queue)",
            )
            return False
        return True

    def end(self, status: str | None = None, message: str = "") -> None:
        """Ask the stream to finish (with a gRPC status name, or OK when None)."""
        if self.end_reason is None:
            self.end_reason = (status, message)
            while self.outgoing.full():  # what is still queued will not be sent anyway
                self.outgoing.get_nowait()
            self.outgoing.put_nowait(None)


class Presence(Protocol):
    """Tells the other cloud replicas which cameras' streams this one holds (scale-out; see
    ``layercast.cloud.cluster``). Embedded mode has none: this process holds every stream."""

    async def attached(self, session: CameraSession) -> None:
        """``session`` became its camera's current stream here (awaited before the Welcome)."""
        ...

    def detached(self, session: CameraSession) -> None:
        """``session`` ended; never raises, never waits (it runs in a stream's cleanup)."""
        ...


class EnhancementSource(Protocol):
    """Where enhancement bitstreams come from: :class:`EnhancementRouter` (this process's streams),
    or in scale-out a router that asks the replica holding the camera."""

    async def fetch(self, camera_id: str, sequence: int, *, timeout_s: float | None = None) -> bytes: ...


class SessionRegistry:
    """Camera id → its current session (embedded mode: this process holds every stream)."""

    def __init__(self) -> None:
        self._sessions: dict[str, CameraSession] = {}
        self._listeners: list[EnhancementRouter] = []
        #: Streams attached since start, per camera (metrics: reconnects show here).
        self.connects: collections.Counter[str] = collections.Counter()

    def attach(self, session: CameraSession) -> CameraSession | None:
        """Make ``session`` the camera's current one; the previous one (if any) is ended and returned."""
        old = self._sessions.get(session.camera_id)
        self._sessions[session.camera_id] = session
        self.connects[session.camera_id] += 1
        if old is not None and old is not session:
            old.end("ABORTED", "superseded by a newer stream from the same camera")
            self._notify_closed(old)
            return old
        return None

    def detach(self, session: CameraSession) -> None:
        """Forget ``session`` (only if it is still the camera's current one) and fail what waits on it."""
        if self._sessions.get(session.camera_id) is session:
            del self._sessions[session.camera_id]
        self._notify_closed(session)

    def get(self, camera_id: str) -> CameraSession | None:
        return self._sessions.get(camera_id)

    def is_online(self, camera_id: str) -> bool:
        return camera_id in self._sessions

    def sessions(self) -> list[CameraSession]:
        return list(self._sessions.values())

    def end_all(self, status: str | None, message: str) -> None:
        for s in list(self._sessions.values()):
            s.end(status, message)

    def _add_listener(self, router: EnhancementRouter) -> None:
        self._listeners.append(router)

    def _notify_closed(self, session: CameraSession) -> None:
        for r in self._listeners:
            r.session_closed(session)


@dataclass(eq=False)
class _Pending:
    request_id: str
    session: CameraSession
    sequence: int
    future: asyncio.Future[bytes]
    sent_at: float


class EnhancementRouter:
    """Routes enhancement requests to cameras and their answers back."""

    def __init__(
        self,
        registry: SessionRegistry,
        *,
        timeout_s: float = 10.0,
        on_fetch: Callable[[str, float, BaseException | None, int], None] | None = None,
    ) -> None:
        self._registry = registry
        self.timeout_s = timeout_s
        #: Observer of each round trip: (camera_id, seconds, error or None, bytes received).
        self.on_fetch = on_fetch
        self._pending: dict[str, _Pending] = {}
        self._inflight: dict[tuple[str, int], asyncio.Task[bytes]] = {}
        registry._add_listener(self)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def fetch(self, camera_id: str, sequence: int, *, timeout_s: float | None = None) -> bytes:
        """The enhancement bitstream of one frame, asked of its camera now.

        Waits at most the router's timeout (or ``timeout_s`` when shorter). Concurrent requests
        for the same frame share one round trip.
        """
        key = (camera_id, sequence)
        task = self._inflight.get(key)
        if task is None:
            limit = self.timeout_s if timeout_s is None else min(timeout_s, self.timeout_s)
            task = asyncio.create_task(self._fetch(camera_id, sequence, limit))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
            if self.on_fetch is not None:
                task.add_done_callback(self._reporter(camera_id, time.monotonic()))
        return await asyncio.shield(task)

    def _reporter(self, camera_id: str, started: float) -> Callable[[asyncio.Task[bytes]], None]:
        def report(task: asyncio.Task[bytes]) -> None:
            error = asyncio.CancelledError() if task.cancelled() else task.exception()
            nbytes = len(task.result()) if error is None else 0
            try:
                if self.on_fetch is not None:
                    self.on_fetch(camera_id, time.monotonic() - started, error, nbytes)
            except Exception:
                log.exception("enhancement observer failed")

        return report

    async def _fetch(self, camera_id: str, sequence: int, timeout_s: float) -> bytes:
        session = self._registry.get(camera_id)
        if session is None or session.closed:
            raise CameraOffline(
                f"camera {camera_id!r} is offline (no open stream), so frame {sequence} cannot be enhanced now"
            )
        loop = asyncio.get_running_loop()
        pending = _Pending(uuid.uuid4().hex, session, sequence, loop.create_future(), time.monotonic())
        self._pending[pending.request_id] = pending
        try:
            sent = session.send(
                edge_pb2.CloudMessage(
                    enhancement_request=edge_pb2.EnhancementRequest(
                        request_id=pending.request_id, sequence=sequence
                    )
                )
            )
            if not sent:
                raise CameraOffline(f"camera {camera_id!r} went offline before the request could be sent")
            try:
                return await asyncio.wait_for(asyncio.shield(pending.future), timeout_s)
            except TimeoutError:
                raise RequestTimeout(
                    f"camera {camera_id!r} did not send the enhancement layer of frame {sequence} within {timeout_s:g} s"
                ) from None
        finally:
            self._pending.pop(pending.request_id, None)

    def resolve(self, session: CameraSession, response: edge_pb2.EnhancementResponse) -> bool:
        """Deliver an edge's answer; False when nothing waits for it (late or unknown id).

        Raises PermissionDenied when the answer comes from a stream other than the one asked.
        """
        pending = self._pending.get(response.request_id)
        if pending is None or pending.future.done():
            return False
        if pending.session is not session:
            raise PermissionDenied(
                f"camera {session.camera_id!r} answered enhancement request {response.request_id} "
                f"that was sent to camera {pending.session.camera_id!r}"
            )
        cam, seq = session.camera_id, pending.sequence
        kind = response.WhichOneof("outcome")
        if response.sequence != seq:
            pending.future.set_exception(
                FrameNotFound(f"camera {cam!r} answered for frame {response.sequence} instead of frame {seq}")
            )
        elif kind == "enhancement":
            pending.future.set_result(response.enhancement)
        else:
            pending.future.set_exception(_unavailable_error(cam, seq, response.unavailable))
        return True

    def session_closed(self, session: CameraSession) -> None:
        """Fail every request still waiting on a stream that ended."""
        for p in list(self._pending.values()):
            if p.session is session and not p.future.done():
                p.future.set_exception(
                    CameraOffline(
                        f"camera {session.camera_id!r} disconnected before answering for frame {p.sequence}"
                    )
                )


def _unavailable_error(camera_id: str, sequence: int, info: edge_pb2.EnhancementUnavailable) -> Exception:
    reasons = edge_pb2.EnhancementUnavailable
    detail = f": {info.message}" if info.message else ""
    if info.reason == reasons.EXPIRED:
        return FrameExpired(
            f"frame {sequence} of camera {camera_id!r} is past the edge's retention window{detail}"
        )
    if info.reason == reasons.NOT_FOUND:
        return FrameNotFound(f"camera {camera_id!r} never had frame {sequence}{detail}")
    if info.reason == reasons.STORE_ERROR:
        return EdgeStoreFailed(f"camera {camera_id!r} could not read its enhancement store{detail}")
    return EdgeStoreFailed(
        f"camera {camera_id!r} did not give the enhancement layer of frame {sequence}{detail}"
    )
