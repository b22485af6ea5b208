"""The edge's side of ``EdgeLink.Connect``: one long-lived stream to the cloud, reopened forever.

Protocol as the edge speaks it (proto/layercast/v1/edge.proto)::

    edge                                   cloud
    Hello(camera, token, models, next_sequence) ->
                                           <- Welcome(initial_credits, heartbeat, max_frame_bytes)
    BaseFrame(seq, resent?) ...            ->            (one credit each)
                                           <- Ack(seq) / FrameRejected(seq) / Credits(n)
                                           <- EnhancementRequest(id, seq)
    EnhancementResponse(id, bytes | unavailable) ->
    Heartbeat (first on every stream, then when nothing was written for heartbeat_interval) ->

Flow control (what the edge assumes of the cloud)
    Credits are grants, separate from acks: each stream starts with
    ``Welcome.initial_credits``; every frame written (resends included) spends
    one; each ``Credits(n)`` adds ``n``. Acks do not return credits: the cloud
    grants them when it has room again (the layercast cloud gives one back
    when a frame's result is stored, or at once for duplicates and rejected
    frames). Independently, at most ``link.max_in_flight`` frames may be
    unacknowledged. Credits left over from a previous stream are void.

Delivery
    Frames go out in sequence order from the outbox. On any disconnect the
    edge backs off (capped exponential, full jitter), reconnects, sends a new
    Hello and resends every unacknowledged frame in order with
    ``resent=true`` if it had been written to any earlier stream (also before
    a restart). Acked frames leave the outbox; rejected ones too, and are never
    resent. A frame larger than ``Welcome.max_frame_bytes`` is never sent (it
    would break the stream for ever): it is dropped and counted.

Liveness
    HTTP/2 keepalive pings (``grpc.keepalive_time_ms``/``_timeout_ms``) detect a
    dead TCP path; a stall watchdog reconnects when frames are in flight and the
    cloud has said nothing for ``stall_timeout_s``. The cloud must allow pings
    that often (``grpc.http2.min_recv_ping_interval_without_data_ms`` at most
    the edge's ``keepalive_time_ms``), or it will answer with GOAWAY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import grpc.aio

from layercast.edge.backoff import Backoff
from layercast.edge.channel import make_channel
from layercast.edge.config import LinkConfig
from layercast.edge.enhancement_store import EnhancementStore
from layercast.edge.outbox import Outbox
from layercast.edge.requests import answer_request
from layercast.edge.stats import EdgeStats
from layercast.shared.clock import now_us
from layercast.shared.errors import LayercastError, StorageError
from layercast.shared.rpc import edge_pb2, edge_pb2_grpc

log = logging.getLogger(__name__)

#: Bytes kept free in a message for the protobuf framing around a bitstream.
MESSAGE_OVERHEAD = 1024

#: Status codes that mean "the cloud refuses this camera" rather than "try again soon":
#: the edge keeps retrying (configuration may be fixed on the cloud) but at the longest delay.
REFUSAL_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


@dataclass(frozen=True)
class EdgeIdentity:
    """What the Hello says about this edge."""

    camera_id: str
    token: str = field(repr=False)
    base_model_id: str
    enhancement_model_id: str | None = None
    temporal_model_id: str | None = None
    capabilities: tuple[str, ...] = ()
    software_version: str = ""


class LinkClosed(Exception):
    """The stream ended (EOF, protocol violation or stall); the link reconnects."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class EdgeLink:
    """Keeps one EdgeLink stream open and moves the outbox through it.

    ``run(stop)`` loops until ``stop`` is set; ``notify()`` tells it new frames
    are in the outbox. All outbox and store calls run in worker threads.
    """

    def __init__(
        self,
        config: LinkConfig,
        identity: EdgeIdentity,
        outbox: Outbox,
        store: EnhancementStore | None,
        stats: EdgeStats | None = None,
        *,
        backoff: Backoff | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.outbox = outbox
        self.store = store
        #: Set (to the reason) when the edge keeps enhancement layers but its store cannot be opened:
        #: requests are then answered STORE_ERROR, not "this edge keeps none".
        self.store_unavailable = ""
        self.stats = stats or EdgeStats()
        self.backoff = backoff or Backoff(config.backoff)
        self.session_id = ""
        #: Called when the cloud asks for an intra frame (the app makes its next frame intra).
        self.on_intra_request: Callable[[], None] | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._connected = asyncio.Event()
        self._credits = 0
        self._heartbeat_s = config.heartbeat_interval_s
        self._frame_limit = config.max_send_message_bytes - MESSAGE_OVERHEAD
        self._control: deque[edge_pb2.EdgeMessage] = deque()
        self._presend_counts: dict[int, int] = {}
        self._pending_acks: list[edge_pb2.Ack] = []
        self._acks_ready = asyncio.Event()
        self._progress_at = 0.0
        self._last_write = 0.0

    # -- public -----------------------------------------------------------------------------------

    def notify(self) -> None:
        """New frames are in the outbox."""
        self._idle.clear()
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout)
        return self._connected.is_set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until the outbox is empty (everything acked or rejected); False on timeout."""
        deadline = time.monotonic() + timeout
        while len(self.outbox):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), min(remaining, 0.25))
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, serve, and reconnect with backoff until ``stop`` is set."""
        first = True
        while not stop.is_set():
            if not first:
                self.stats.record_reconnect_attempt()
            first = False
            reason = await self._attempt(stop)
            if stop.is_set():
                break
            delay = self.backoff.next_delay()
            log.info("edge link to %s lost (%s); reconnecting in %.2fs", self.config.cloud, reason, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    # -- one connection -----------------------------------------------------------------------------

    async def _attempt(self, stop: asyncio.Event) -> str:
        """One connection, until it fails or ``stop``; returns why it ended."""
        session = asyncio.ensure_future(self._session())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({session, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (session, stopper):
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopper
        reason = "stopped"
        try:
            await session
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
        except grpc.aio.AioRpcError as exc:
            reason = f"{exc.code().name}: {exc.details()}"
            if exc.code() in REFUSAL_CODES:
                log.error("the cloud refused camera %s: %s", self.identity.camera_id, reason)
                self.backoff.failures = max(self.backoff.failures, 64)
        except LinkClosed as exc:
            reason = str(exc)
            if exc.code in REFUSAL_CODES:
                log.error("the cloud refused camera %s: %s", self.identity.camera_id, reason)
                self.backoff.failures = max(self.backoff.failures, 64)
        except StorageError as exc:
            reason = f"outbox failure: {exc}"
            log.error("%s", reason)
        except LayercastError as exc:  # e.g. an unreadable TLS file: say it plainly, retry later
            reason = str(exc)
            log.error("edge link: %s", reason)
        except Exception as exc:  # keep the camera running whatever goes wrong with one stream
            reason = f"{type(exc).__name__}: {exc}"
            log.exception("edge link failed unexpectedly")
        self._connected.clear()
        self.stats.record_disconnected(reason, error=reason != "stopped")
        return reason

    async def _session(self) -> None:
        channel = make_channel(self.config)
        call = None
        try:
            call = edge_pb2_grpc.EdgeLinkStub(channel).Connect()
            await self._handshake(call)
            await _first_failure(
                self._reader(call), self._writer(call), self._ack_flusher(), self._watchdog()
            )
        finally:
            if call is not None:
                call.cancel()
            await channel.close(grace=None)
            with contextlib.suppress(StorageError):
                await self._flush_acks()  # acks that arrived just before the end still count
            self._control.clear()
            self._presend_counts.clear()

    async def _handshake(self, call: grpc.aio.StreamStreamCall) -> None:
        ident = self.identity
        next_seq = await asyncio.to_thread(lambda: self.outbox.next_sequence)
        hello = edge_pb2.Hello(
            camera_id=ident.camera_id,
            token=ident.token,
            base_model_id=ident.base_model_id,
            enhancement_model_id=ident.enhancement_model_id or "",
            temporal_model_id=ident.temporal_model_id or "",
            capabilities=list(ident.capabilities),
            next_sequence=next_seq,
            software_version=ident.software_version,
        )
        await self._write(call, edge_pb2.EdgeMessage(hello=hello))
        try:
            first = await asyncio.wait_for(call.read(), self.config.welcome_timeout_s)
        except TimeoutError:
            raise LinkClosed(f"no Welcome within {self.config.welcome_timeout_s}s") from None
        if first is grpc.aio.EOF:
            raise LinkClosed("the cloud closed the stream before its Welcome")
        if first.WhichOneof("kind") != "welcome":
            raise LinkClosed(f"expected a Welcome, got {first.WhichOneof('kind')}")
        w = first.welcome
        self.session_id = w.session_id
        self.outbox.reset_in_flight()
        if w.last_acked_sequence >= next_seq:
            # The cloud holds sequences this outbox has not issued yet (a wiped data directory):
            # move past them so new frames are not taken for duplicates.
            await asyncio.to_thread(self.outbox.advance_sequence, w.last_acked_sequence + 1)
            log.warning(
                "cloud has frames up to %d for camera %s but the outbox was at %d; new frames start at %d",
                w.last_acked_sequence,
                ident.camera_id,
                next_seq,
                w.last_acked_sequence + 1,
            )
        self._credits = w.initial_credits
        self._heartbeat_s = (
            w.heartbeat_interval_ms / 1000 if w.heartbeat_interval_ms else self.config.heartbeat_interval_s
        )
        limit = self.config.max_send_message_bytes - MESSAGE_OVERHEAD
        self._frame_limit = min(limit, w.max_frame_bytes) if w.max_frame_bytes else limit
        self._progress_at = self._last_write = time.monotonic()
        self.backoff.reset()
        self.stats.record_connected()
        self._connected.set()
        log.info(
            "edge link up: camera %s session %s, %d credits, next sequence %d",
            ident.camera_id,
            w.session_id,
            w.initial_credits,
            next_seq,
        )

    # -- the three tasks of a session ---------------------------------------------------------------

    async def _writer(self, call: grpc.aio.StreamStreamCall) -> None:
        # the outbox's state first: frames dropped while the link was down are known to the cloud
        # at once, even if the camera has nothing more to send
        await self._send_heartbeat(call)
        while True:
            self._wake.clear()
            while self._control:
                await self._write(call, self._control.popleft())
            room = min(self._credits, self.config.max_in_flight - self.outbox.in_flight)
            if room > 0:
                was_idle = self.outbox.in_flight == 0
                frames = await asyncio.to_thread(self.outbox.take, room)
                if frames:
                    if was_idle:
                        self._progress_at = time.monotonic()
                    await self._send_frames(call, frames)
                    continue
            if not len(self.outbox):
                self._idle.set()
            wait = self._heartbeat_s - (time.monotonic() - self._last_write)
            if wait <= 0:
                await self._send_heartbeat(call)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _send_frames(self, call: grpc.aio.StreamStreamCall, frames: list) -> None:
        too_large = [f.sequence for f in frames if len(f.base) > self._frame_limit]
        if too_large:
            removed = await asyncio.to_thread(self.outbox.discard, too_large, "too_large")
            for _ in too_large:
                self.stats.record_too_large()
            # queued predicted frames coded from them went too (counted as outbox drops)
            self.stats.record_queued(False, max(0, removed - len(too_large)))
            log.error(
                "dropping frames %s: larger than the %d bytes the cloud accepts", too_large, self._frame_limit
            )
        for f in frames:
            if f.sequence in too_large:
                continue
            self._presend_counts[f.sequence] = f.sent_count
            msg = edge_pb2.EdgeMessage(
                frame=edge_pb2.BaseFrame(
                    sequence=f.sequence, capture_time_us=f.capture_time_us, base=f.base, resent=f.resent
                )
            )
            await self._write(call, msg)
            self._credits -= 1
            self.stats.record_sent(len(f.base), f.resent)

    async def _send_heartbeat(self, call: grpc.aio.StreamStreamCall) -> None:
        st = await asyncio.to_thread(self.outbox.stats)
        hb = edge_pb2.Heartbeat(
            time_us=now_us(), queued_frames=st.queued_frames, dropped_frames=st.dropped_frames
        )
        await self._write(call, edge_pb2.EdgeMessage(heartbeat=hb))
        self.stats.record_heartbeat()

    async def _write(self, call: grpc.aio.StreamStreamCall, msg: edge_pb2.EdgeMessage) -> None:
        try:
            await call.write(msg)
        except asyncio.InvalidStateError:  # the call ended with an OK status (or raced its error)
            code = await call.code()
            raise LinkClosed(f"{code.name}: {await call.details()}", code) from None
        self._last_write = time.monotonic()

    async def _reader(self, call: grpc.aio.StreamStreamCall) -> None:
        requests: set[asyncio.Task[None]] = set()
        limiter = asyncio.Semaphore(self.config.max_concurrent_requests)
        try:
            while True:
                msg = await call.read()
                if msg is grpc.aio.EOF:
                    raise LinkClosed("the cloud ended the stream")
                self._progress_at = time.monotonic()
                kind = msg.WhichOneof("kind")
                if kind == "ack":
                    self._pending_acks.append(msg.ack)
                    self._acks_ready.set()
                elif kind == "credits":
                    self._credits += msg.credits.credits
                elif kind == "rejected":
                    await self._on_rejected(msg.rejected)
                elif kind == "intra_request":
                    self._on_intra_request(msg.intra_request)
                elif kind == "enhancement_request":
                    task = asyncio.create_task(self._serve_request(msg.enhancement_request, limiter))
                    requests.add(task)
                    task.add_done_callback(requests.discard)
                else:
                    log.warning("ignoring unexpected %s from the cloud", kind)
                self._wake.set()
        finally:
            for task in requests:
                task.cancel()

    async def _watchdog(self) -> None:
        timeout = self.config.stall_timeout_s
        if timeout <= 0:
            await asyncio.Event().wait()  # never fires
        while True:
            await asyncio.sleep(min(timeout / 4, 1.0))
            if self.outbox.in_flight and time.monotonic() - self._progress_at > timeout:
                raise LinkClosed(f"no answer from the cloud for {timeout}s with frames in flight")

    # -- handlers -----------------------------------------------------------------------------------

    async def _ack_flusher(self) -> None:
        """Apply acks in batches: one outbox transaction (one fsync) for all acks that arrived meanwhile."""
        while True:
            await self._acks_ready.wait()
            self._acks_ready.clear()
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        acks, self._pending_acks = self._pending_acks, []
        if not acks:
            return
        await asyncio.to_thread(self.outbox.ack, [a.sequence for a in acks])
        for ack in acks:
            presend = self._presend_counts.pop(ack.sequence, None)
            if presend is None:
                log.debug("ack for frame %d that was not sent on this stream", ack.sequence)
                continue
            self.stats.record_ack(ack.duplicate)
            if ack.duplicate and presend == 0:
                # The cloud already had a frame this edge had never sent: two frames share a
                # sequence number (data directory wiped and frames captured before the first Welcome).
                self.stats.sequence_collisions += 1
                log.error(
                    "frame %d was new but the cloud already had that sequence; it is lost", ack.sequence
                )
        self._wake.set()

    def _on_intra_request(self, req: edge_pb2.IntraRequest) -> None:
        self.stats.intra_requests += 1
        reason = (
            edge_pb2.IntraRequest.Reason.Name(req.reason)
            if req.reason in edge_pb2.IntraRequest.Reason.values()
            else str(req.reason)
        )
        log.info("cloud asks for an intra frame (%s, frame %d): %s", reason, req.sequence, req.message)
        if self.on_intra_request is not None:
            self.on_intra_request()

    async def _on_rejected(self, rej: edge_pb2.FrameRejected) -> None:
        self._presend_counts.pop(rej.sequence, None)
        await asyncio.to_thread(self.outbox.reject, rej.sequence)
        self.stats.record_rejected()
        code = _status_name(rej.code)
        log.warning("cloud rejected frame %d (%s): %s", rej.sequence, code, rej.message)

    async def _serve_request(self, req: edge_pb2.EnhancementRequest, limiter: asyncio.Semaphore) -> None:
        async with limiter:
            resp = await answer_request(
                req,
                self.store,
                self.stats,
                self.config.max_send_message_bytes - MESSAGE_OVERHEAD,
                store_unavailable=self.store_unavailable,
            )
        self._control.append(edge_pb2.EdgeMessage(enhancement=resp))
        self._wake.set()


def _status_name(code: int) -> str:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return str(code)


async def _first_failure(*aws: Awaitable[None]) -> None:
    """Run coroutines together; when one ends (returns or raises), cancel the rest and re-raise."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in done:
        if not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
    raise LinkClosed("a link task ended")
