"""The path of one frame inside the cloud: check → store → ack → batch → result → subscribers.

:class:`FramePipeline` owns the batcher and is what the EdgeLink servicer
calls for each BaseFrame. It parses the frame's header once into a
:class:`~layercast.cloud.ingest.frame.Frame` and answers in
:data:`~layercast.cloud.ingest.frame.FrameEvent` values (Acked, Rejected,
CreditsBack), which the servicer turns into messages. Guarantees:

* A frame is acknowledged only after it is durably stored; a frame already
  stored is acknowledged again with ``duplicate=true`` and produces nothing.
* A frame whose header is bad is refused (FrameRejected) before it is stored;
  one whose payload fails to decode later is marked rejected in the store and
  reported with a FrameRejected after its Ack.
* A predicted frame's header names its reference instead of a size: it is bound to the header
  of the camera's newest frame stored by this process, or of the stored frame before it (after
  a restart); when it names neither it is refused before storing (FAILED_PRECONDITION,
  ``ReferenceMismatch``) and the camera is sent an :class:`IntraNeeded`.
* Each camera's frames are decoded one at a time and in order (a predicted frame decodes
  against the one before; the batcher batches across cameras). A predicted frame whose
  decoded reference the cloud neither holds nor can rebuild from the store fails
  FAILED_PRECONDITION like any frame that does not decode, and the camera is sent an
  :class:`IntraNeeded` (once until its next intra frame decodes). A stream of a camera that
  codes predicted frames, has streamed to this store before and has no live reference in this
  process is sent one right after its Welcome (:meth:`FramePipeline.stream_opened`).
* Results are written to the store, then published, in sequence order per
  camera. Frames stored but without a result (a crash between Ack and
  inference) are found by :meth:`recover` at start-up and processed then.
* Flow control by credit grants: a stream starts with
  ``Welcome.initial_credits``; each frame the edge sends spends one. The cloud
  gives a credit back (``Credits``) once it is done with the frame: when its
  result (or its failure) is stored, at once for duplicates and refused frames.
  So one camera never has more than its credits of frames waiting for
  inference. Credits belong to a stream: frames of an earlier stream of the
  same camera return none.
* Back-stop for an edge that ignores its credits: at most
  ``backlog_per_camera`` frames of one camera wait for inference (and
  ``queue_capacity`` in all); beyond that its stream is not read until room
  frees up, so HTTP/2 flow control slows that camera alone.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc

from layercast.cloud.ingest.batcher import Batcher, BatchRecord, Done
from layercast.cloud.ingest.engine import InferenceEngine
from layercast.cloud.ingest.frame import Acked, CreditsBack, Frame, FrameEvent, IntraNeeded, Rejected
from layercast.cloud.results.hub import ResultSink
from layercast.cloud.results.records import MAX_SEQUENCE, FrameRecord, InsertOutcome, ResultRecord
from layercast.cloud.results.store import Store
from layercast.cloud.rpc.status import code_number, status_of
from layercast.cloud.sessions import CameraSession, SessionRegistry
from layercast.shared.clock import now_us
from layercast.shared.codec.bitstream import Bitstream, Header, LayerKind, frame_ref_of, parse_header
from layercast.shared.errors import LayercastError, ReferenceMismatch
from layercast.shared.rpc import common_pb2

log = logging.getLogger(__name__)

#: Sends an event down a camera's stream (the EdgeLink servicer's ``send_event``).
Deliver = Callable[[CameraSession, FrameEvent], None]


@dataclass(frozen=True)
class FrameTask:
    """A stored frame in the batcher, with the stream it came from."""

    frame: Frame
    session_id: str | None  # the stream that sent it (None when recovered at start-up)
    holds_slot: bool = False  # counts against its camera's backlog


@dataclass(frozen=True)
class AdhocTask:
    """A one-off Analytics.Infer request (not stored, no ordering)."""

    frame: Frame


@dataclass
class PipelineStats:
    """Counters the metrics layer reads."""

    frames_received: int = 0
    frames_new: int = 0
    frames_duplicate: int = 0
    frames_rejected: int = 0
    results: int = 0
    recovered: int = 0
    #: IntraNeeded events sent, by reason (``IntraRequest.Reason`` names).
    intra_requests: collections.Counter[str] = field(default_factory=collections.Counter)
    rejected_by_code: collections.Counter[grpc.StatusCode] = field(default_factory=collections.Counter)
    #: (camera, outcome) → frames; outcome: "stored", "duplicate" or "rejected" (refused before storing).
    by_camera: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)


class FramePipeline:
    """Ingest, batching and result delivery for every camera of this process."""

    def __init__(
        self,
        *,
        store: Store,
        engine: InferenceEngine,
        hub: ResultSink,
        registry: SessionRegistry,
        deliver: Deliver,
        max_batch_size: int,
        max_queue_delay_s: float,
        workers: int,
        queue_capacity: int,
        max_frame_bytes: int = 4 << 20,
        backlog_per_camera: int = 32,
        on_batch: Callable[[BatchRecord], None] | None = None,
        on_results: Callable[[list[common_pb2.Result]], None] | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self.hub = hub
        self.registry = registry
        self._deliver = deliver  # events that arise after ingest (a failed decode, credits)
        self.stats = PipelineStats()
        self._on_results = on_results  # observer of results just stored and published (metrics)
        self.max_frame_bytes = max_frame_bytes
        self.batcher: Batcher[FrameTask | AdhocTask, common_pb2.Result] = Batcher(
            self._infer,
            max_batch_size=max_batch_size,
            max_queue_delay_s=max_queue_delay_s,
            workers=workers,
            queue_capacity=queue_capacity,
            on_complete=self._complete,
            on_batch=on_batch,
        )
        self._accepting = True
        self._camera_locks: dict[str, asyncio.Lock] = {}
        self._backlog: dict[str, asyncio.Semaphore] = {}
        self.backlog_per_camera = backlog_per_camera
        #: Frames of each camera's streams waiting for their result, and a signal when that changes.
        self._unfinished: collections.Counter[str] = collections.Counter()
        #: Per camera, stored frames waiting for room in its backlog, and the task feeding them.
        self._waiting: dict[str, collections.deque[FrameTask]] = {}
        self._feeders: dict[str, asyncio.Task[None]] = {}
        self._fed = asyncio.Condition()  # a waiting frame went to the batcher
        self._finished = asyncio.Condition()
        #: Cameras asked for an intra frame that has not decoded yet (asked once until it does).
        self._intra_asked: set[str] = set()
        #: Per camera, the newest stored frame's sequence and header: what its next predicted
        #: frame names, and so its size (the decoded references live in the engine).
        self._heads: dict[str, tuple[int, Header]] = {}

    # -- ingest -----------------------------------------------------------------------------------
    def stop_accepting(self) -> None:
        """Frames arriving from now on are neither stored nor acknowledged (the edge resends them)."""
        self._accepting = False

    @property
    def accepting(self) -> bool:
        return self._accepting

    async def ingest(
        self, session: CameraSession, sequence: int, capture_time_us: int, data: bytes
    ) -> AsyncIterator[FrameEvent]:
        """Handle one frame of ``session``, yielding what to tell the camera as it happens:
        Acked (then CreditsBack for a duplicate), or Rejected and CreditsBack.

        A stored frame is queued for inference before its Acked is yielded, by the camera's feeder
        task (so a stream that ends right after the Ack leaves no stored frame behind); the
        generator finishes once the feeder has submitted it (it waits while the camera's backlog
        is full, after its Acked)."""
        if not self._accepting:
            return
        self.stats.frames_received += 1
        cam = session.camera_id
        try:
            frame = await self._parse(cam, sequence, capture_time_us, data)
        except _Refused as refused:
            for event in self._refuse(cam, refused.event):
                yield event
            return
        # One camera's frames are stored and queued strictly in turn, even when a reconnecting
        # camera briefly has two streams.
        async with self._camera_locks.setdefault(cam, asyncio.Lock()):
            outcome = await self.store.put_frame(frame)
            if outcome is not InsertOutcome.STALE:
                self._held(frame)
            if outcome is InsertOutcome.DUPLICATE:
                self.stats.frames_duplicate += 1
                self.stats.by_camera[(cam, "duplicate")] += 1
                yield Acked(sequence, duplicate=True)
                yield CreditsBack(1)
                return
            if outcome is InsertOutcome.STALE:
                stale = Rejected(
                    sequence,
                    grpc.StatusCode.OUT_OF_RANGE,
                    f"sequence {sequence} is not after the newest sequence stored for camera {cam!r} and is "
                    "not stored; sequences must increase (or the frame is past the cloud's retention)",
                )
                for event in self._refuse(cam, stale):
                    yield event
                return
            self.stats.frames_new += 1
            self.stats.by_camera[(cam, "stored")] += 1
            # Queued before the Ack goes out, by the pipeline rather than this stream: a stream cut
            # right after the Ack must not leave a stored frame without its result.
            task = FrameTask(frame, session.session_id, holds_slot=True)
            self._enqueue(task)
        yield Acked(sequence)
        async with self._fed:  # the back-stop: this stream is read on once the frame is queued
            await self._fed.wait_for(lambda: all(t is not task for t in self._waiting[cam]))

    async def _parse(self, camera_id: str, sequence: int, capture_time_us: int, data: bytes) -> Frame:
        """The frame record, its header parsed and checked once (a predicted frame's bound to the
        header of the frame it names); raises _Refused."""
        if len(data) > self.max_frame_bytes:
            raise _Refused(
                sequence,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"base bitstream of {len(data)} bytes is above the limit of {self.max_frame_bytes}",
            )
        if not 1 <= sequence <= MAX_SEQUENCE:
            raise _Refused(
                sequence,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"sequence {sequence} is outside 1..{MAX_SEQUENCE}; sequences start at 1",
            )
        try:
            bitstream = self.engine.check_base(data)
            if bitstream.header.kind is LayerKind.PREDICTED:
                bitstream = await self._bind(camera_id, sequence, bitstream)
        except LayercastError as exc:
            raise _Refused(sequence, status_of(exc), str(exc)) from None
        return Frame(camera_id, sequence, capture_time_us, now_us(), bitstream)

    async def _bind(self, camera_id: str, sequence: int, bitstream: Bitstream) -> Bitstream:
        """A predicted frame bound to the header of the frame it names: the camera's newest frame
        stored by this process, or the frame stored before it (after a restart). Neither → the
        camera is asked for an intra frame and the frame refused (ReferenceMismatch)."""
        frame_ref = bitstream.header.frame_ref
        held = self._heads.get(camera_id)
        if held is not None and held[1].layer_ref == frame_ref:
            return self.engine.bind(bitstream, held[1])
        stored = await self._stored_header(camera_id, sequence - 1, frame_ref)
        if stored is not None:
            return self.engine.bind(bitstream, stored)
        holds = "none" if held is None else f"{held[1].layer_ref:08x}"
        message = (
            f"frame {sequence} of {camera_id} is predicted from base layer {frame_ref:08x}; this cloud "
            f"holds {holds} and has not stored it: the camera must send an intra frame"
        )
        if sequence:  # a frame of a camera's stream, not a one-off Infer
            reason = "NO_REFERENCE" if held is None else "REFERENCE_MISMATCH"
            self._ask_intra(IntraNeeded(camera_id, sequence, reason, message))
        raise ReferenceMismatch(message)

    async def _stored_header(self, camera_id: str, sequence: int, frame_ref: int) -> Header | None:
        """The header of the stored frame ``sequence`` of ``camera_id`` if its bytes are ``frame_ref``
        (a stored predicted frame's with the size and model stored with it, bound at its ingest)."""
        if not camera_id or sequence < 1:
            return None
        record = await self.store.get_frame(camera_id, sequence)
        if record is None or frame_ref_of(record.base) != frame_ref:
            return None
        try:
            header = parse_header(record.base, max_pixels=self.engine.max_pixels)
        except LayercastError:
            return None
        if not header.bound:
            header = dataclasses.replace(
                header, width=record.width, height=record.height, model_id=record.model_id
            )
        return header

    def _held(self, frame: Frame) -> None:
        """``frame`` is stored: its header is what the camera's next predicted frame binds to."""
        held = self._heads.get(frame.camera_id)
        if held is None or frame.sequence >= held[0]:
            self._heads[frame.camera_id] = (frame.sequence, frame.header)

    def _refuse(self, camera_id: str, event: Rejected) -> tuple[Rejected, CreditsBack]:
        self.stats.frames_rejected += 1
        self.stats.rejected_by_code[event.code] += 1
        self.stats.by_camera[(camera_id, "rejected")] += 1
        log.info(
            "camera %s frame %d rejected: %s %s", camera_id, event.sequence, event.code.name, event.message
        )
        return event, CreditsBack(1)

    def _enqueue(self, task: FrameTask) -> None:
        """Hand a stored frame to its camera's feeder, which submits the camera's frames to the
        batcher in order as its backlog has room (no await: storing and queueing are one step)."""
        cam = task.frame.camera_id
        self._unfinished[cam] += 1
        self._waiting.setdefault(cam, collections.deque()).append(task)
        feeder = self._feeders.get(cam)
        if feeder is None or feeder.done():
            self._feeders[cam] = asyncio.create_task(self._feed(cam), name=f"feed-{cam}")

    async def _feed(self, cam: str) -> None:
        waiting = self._waiting[cam]
        slots = self._backlog.setdefault(cam, asyncio.Semaphore(self.backlog_per_camera))
        try:
            while waiting:
                await slots.acquire()
                try:
                    await self.batcher.submit(waiting[0], key=cam)
                except BaseException:
                    slots.release()
                    raise
                waiting.popleft()
                async with self._fed:
                    self._fed.notify_all()
        except BaseException as exc:
            self._unfinished[cam] -= len(waiting)
            waiting.clear()  # stored: recover() queues them at the next start
            async with self._fed:
                self._fed.notify_all()
            async with self._finished:
                self._finished.notify_all()
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.warning("frames of %s not queued (%s); they stay stored for recovery", cam, exc)

    async def close_feeders(self, timeout: float) -> None:
        """Let the cameras' feeders submit the acknowledged frames they hold (before the batcher
        closes), up to ``timeout`` s; what is left stays stored for :meth:`recover`."""
        feeders = [f for f in self._feeders.values() if not f.done()]
        if feeders:
            _, late = await asyncio.wait(feeders, timeout=timeout)
            for f in late:
                f.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def recover(self) -> int:
        """Queue every stored frame that has no result yet (after a crash), in order. Returns how many.

        Each is checked as a new frame is, under the present limits: one that fails (e.g. above a
        lowered pixel limit) is marked rejected without being decoded. Call before cameras can
        connect (the server does so before it reports SERVING).
        """
        count = 0
        after: tuple[str, int] | None = None
        while True:
            pending = await self.store.pending_frames(limit=1000, after=after)
            if not pending:
                break
            for stored in pending:
                frame = await self._recovered(stored)
                if frame is not None:
                    await self.batcher.submit(FrameTask(frame, None), key=frame.camera_id)
                    count += 1
            after = (pending[-1].camera_id, pending[-1].sequence)
        self.stats.recovered += count
        if count:
            log.info("recovered %d stored frames that had no result yet", count)
        return count

    async def _recovered(self, stored: FrameRecord) -> Frame | None:
        try:
            frame = await self._parse(stored.camera_id, stored.sequence, stored.capture_time_us, stored.base)
        except _Refused as refused:
            await self._failed(stored.camera_id, refused.event)
            return None
        self._held(frame)
        return frame

    # -- unary inference ----------------------------------------------------------------------------
    async def infer_base(self, base: bytes, camera_id: str = "") -> common_pb2.Result:
        """Run one base bitstream through the batcher (not stored, not published), after the
        cameras' frames waiting at the time (low priority)."""
        bitstream = self.engine.check_base(base)
        if bitstream.header.kind is LayerKind.PREDICTED:
            bitstream = await self._bind(camera_id, 0, bitstream)
        frame = Frame(camera_id, 0, 0, now_us(), bitstream)
        fut = await self.batcher.submit(AdhocTask(frame), key=None, low_priority=True)
        return await fut

    # -- batch execution (worker thread) -------------------------------------------------------------
    def _infer(self, tasks: list[FrameTask | AdhocTask]) -> list[common_pb2.Result | LayercastError]:
        return self.engine.run_batch([t.frame for t in tasks])

    # -- results (event loop, in per-camera order) ---------------------------------------------------
    async def _complete(self, done: list[Done[FrameTask | AdhocTask, common_pb2.Result]]) -> None:
        frames = [d for d in done if isinstance(d.item, FrameTask)]
        results = [d.result for d in frames if d.error is None and d.result is not None]
        if results:
            await self.store.put_results(
                [
                    ResultRecord(r.camera_id, r.sequence, r.processed_time_us, r.SerializeToString())
                    for r in results
                ]
            )
            self.stats.results += len(results)
            for r in results:
                self.hub.publish(r)
            if self._on_results is not None:
                self._on_results(results)
        for d in frames:
            frame = d.item.frame
            if d.error is None:
                if frame.header.kind is LayerKind.BASE:
                    self._intra_asked.discard(frame.camera_id)
                continue
            if isinstance(d.error, ReferenceMismatch):
                reason = getattr(d.error, "reason", "REFERENCE_MISMATCH")
                self._ask_intra(IntraNeeded(frame.camera_id, frame.sequence, reason, str(d.error)))
            code = status_of(d.error)
            message = str(d.error) if isinstance(d.error, LayercastError) else "internal error while decoding"
            event = Rejected(d.item.frame.sequence, code, message)
            await self._failed(d.item.frame.camera_id, event, d.item.session_id)
        credits: collections.Counter[tuple[str, str]] = collections.Counter()
        for d in frames:
            cam = d.item.frame.camera_id
            if d.item.holds_slot:
                self._backlog[cam].release()
                self._unfinished[cam] -= 1
            if d.item.session_id is not None:
                credits[(cam, d.item.session_id)] += 1
        for (cam, sid), n in credits.items():
            self._send(cam, sid, CreditsBack(n))
        if any(d.item.holds_slot for d in frames):
            async with self._finished:
                self._finished.notify_all()

    async def _failed(self, camera_id: str, event: Rejected, session_id: str | None = None) -> None:
        """A stored frame that will have no result: marked rejected, counted, told to its stream."""
        await self.store.mark_rejected(camera_id, event.sequence, code_number(event.code), event.message)
        self.stats.frames_rejected += 1
        self.stats.rejected_by_code[event.code] += 1
        log.info(
            "camera %s frame %d failed: %s %s", camera_id, event.sequence, event.code.name, event.message
        )
        if session_id is not None:
            self._send(camera_id, session_id, event)

    def _ask_intra(self, event: IntraNeeded, *, again: bool = False) -> None:
        """Send ``event`` to the camera's current stream, unless it was asked already (``again``:
        ask even so) or it is not connected."""
        cam = event.camera_id
        if cam in self._intra_asked and not again:
            return
        session = self.registry.get(cam)
        if session is None:
            return
        self._intra_asked.add(cam)
        self.stats.intra_requests[event.reason] += 1
        log.info("camera %s asked for an intra frame (%s): %s", cam, event.reason, event.message)
        self._deliver(session, event)

    def stream_opened(self, camera_id: str, *, predicts: bool, seen_before: bool) -> None:
        """A stream of ``camera_id`` was just welcomed: if the camera codes predicted frames
        (``predicts``: its Hello names a temporal model), has streamed before (``seen_before``: the
        store holds frames of it) and this process holds no reference for it (a restarted cloud, a
        reconnect after its reference was dropped), ask it to go on with an intra frame. A camera
        new to this store starts with an intra frame by itself; should its first frames be
        predicted ones from an earlier cloud, the first of them that fails asks."""
        if predicts and seen_before and self.engine.loaded and self.engine.references.live(camera_id) is None:
            message = "this cloud holds no reference for the camera: start with an intra frame"
            self._ask_intra(IntraNeeded(camera_id, 0, "NO_REFERENCE", message), again=True)

    def _send(self, camera_id: str, session_id: str, event: FrameEvent) -> None:
        """Tell the stream ``session_id`` of ``camera_id``, if it is still the camera's current one."""
        session = self.registry.get(camera_id)
        if session is not None and session.session_id == session_id:
            self._deliver(session, event)

    async def settled(self, camera_id: str) -> None:
        """Wait until every frame a stream of ``camera_id`` sent has its result stored and published
        (or its failure recorded): a camera moving to another cloud replica hands over in order."""
        async with self._finished:
            await self._finished.wait_for(lambda: self._unfinished[camera_id] <= 0)


class _Refused(Exception):
    def __init__(self, sequence: int, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.event = Rejected(sequence, code, message)
