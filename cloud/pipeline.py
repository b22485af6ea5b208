"""The path of one frame inside the cloud: check → store → ack → batch → result → subscribers.

:class:`FramePipeline` owns the batcher and is what the EdgeLink servicer
calls for each BaseFrame. Guarantees:

* A frame is acknowledged only after it is durably stored; a frame already
  stored is acknowledged again with ``duplicate=true`` and produces nothing.
* A frame whose header is bad is refused (FrameRejected) before it is stored;
  one whose payload fails to decode later is marked rejected in the store and
  reported with a FrameRejected after its Ack.
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
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from layercast.cloud.batcher import Batcher, BatchRecord, Done
from layercast.cloud.hub import ResultSink
from layercast.cloud.inference import FrameHeader, InferenceEngine, InferJob, now_us
from layercast.cloud.sessions import CameraSession, SessionRegistry
from layercast.cloud.status import code_number, status_of
from layercast.cloud.store import MAX_SEQUENCE, FrameRecord, InsertOutcome, ResultRecord, Store, make_frame
from layercast.shared.errors import LayercastError
from layercast.shared.rpc import common_pb2, edge_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameTask:
    """A stored frame on its way through the batcher."""

    job: InferJob
    session_id: str | None  # the stream that sent it (None when recovered at start-up)
    holds_slot: bool = False  # counts against its camera's backlog


@dataclass(frozen=True)
class AdhocTask:
    """A one-off Analytics.Infer request (not stored, no ordering)."""

    job: InferJob


@dataclass
class PipelineStats:
    """Counters the metrics layer reads."""

    frames_received: int = 0
    frames_new: int = 0
    frames_duplicate: int = 0
    frames_rejected: int = 0
    results: int = 0
    recovered: int = 0
    rejected_by_code: collections.Counter[str] = field(default_factory=collections.Counter)
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
        self._finished = asyncio.Condition()

    # -- ingest -----------------------------------------------------------------------------------
    def stop_accepting(self) -> None:
        """Frames arriving from now on are neither stored nor acknowledged (the edge resends them)."""
        self._accepting = False

    @property
    def accepting(self) -> bool:
        return self._accepting

    async def ingest(self, session: CameraSession, frame: edge_pb2.BaseFrame) -> None:
        """Handle one BaseFrame of ``session``: answer with Ack or FrameRejected, queue new frames.

        Returns once the frame is queued for inference (it waits while the camera's backlog is full)."""
        if not self._accepting:
            return
        self.stats.frames_received += 1
        cam, seq = session.camera_id, frame.sequence
        try:
            if len(frame.base) > self.max_frame_bytes:
                raise _Reject(
                    "RESOURCE_EXHAUSTED",
                    f"base bitstream of {len(frame.base)} bytes is above the limit of {self.max_frame_bytes}",
                )
            if not 1 <= seq <= MAX_SEQUENCE:
                raise _Reject(
                    "INVALID_ARGUMENT", f"sequence {seq} is outside 1..{MAX_SEQUENCE}; sequences start at 1"
                )
            header = self.engine.check_base(frame.base)
        except _Reject as rej:
            self.reject(session, seq, rej.code, rej.message)
            return
        except LayercastError as exc:
            self.reject(session, seq, status_of(exc).name, str(exc))
            return
        record = make_frame(
            cam,
            seq,
            frame.base,
            capture_time_us=frame.capture_time_us,
            received_us=now_us(),
            width=header.width,
            height=header.height,
            model_id=header.model_id,
        )
        # One camera's frames are stored and queued strictly in turn, even when a reconnecting
        # camera briefly has two streams.
        async with self._camera_locks.setdefault(cam, asyncio.Lock()):
            await self._store_and_queue(session, record, frame, header)

    async def _store_and_queue(
        self, session: CameraSession, record: FrameRecord, frame: edge_pb2.BaseFrame, header: FrameHeader
    ) -> None:
        cam, seq = session.camera_id, frame.sequence
        outcome = await self.store.put_frame(record)
        if outcome is InsertOutcome.DUPLICATE:
            self.stats.frames_duplicate += 1
            self.stats.by_camera[(cam, "duplicate")] += 1
            session.send(edge_pb2.CloudMessage(ack=edge_pb2.Ack(sequence=seq, duplicate=True)))
            session.send(_credits(1))
            return
        if outcome is InsertOutcome.STALE:
            self.reject(
                session,
                seq,
                "OUT_OF_RANGE",
                f"sequence {seq} is not after the newest sequence stored for camera {cam!r} and is not stored; "
                "sequences must increase (or the frame is past the cloud's retention)",
            )
            return
        self.stats.frames_new += 1
        self.stats.by_camera[(cam, "stored")] += 1
        session.send(edge_pb2.CloudMessage(ack=edge_pb2.Ack(sequence=seq)))
        job = InferJob(cam, seq, frame.capture_time_us, frame.base, header)
        slots = self._backlog.setdefault(cam, asyncio.Semaphore(self.backlog_per_camera))
        await slots.acquire()
        self._unfinished[cam] += 1
        try:
            await self.batcher.submit(FrameTask(job, session.session_id, holds_slot=True), key=cam)
        except BaseException:
            slots.release()
            self._unfinished[cam] -= 1
            raise

    def reject(self, session: CameraSession, seq: int, code: str, message: str) -> None:
        self.stats.frames_rejected += 1
        self.stats.rejected_by_code[code] += 1
        self.stats.by_camera[(session.camera_id, "rejected")] += 1
        log.info("camera %s frame %d rejected: %s %s", session.camera_id, seq, code, message)
        number = code_number(grpc.StatusCode[code])
        session.send(
            edge_pb2.CloudMessage(rejected=edge_pb2.FrameRejected(sequence=seq, code=number, message=message))
        )
        session.send(_credits(1))

    async def recover(self) -> int:
        """Queue every stored frame that has no result yet (after a crash), in order. Returns how many.

        Call before cameras can connect (the server does so before it reports SERVING).
        """
        count = 0
        after: tuple[str, int] | None = None
        while True:
            pending = await self.store.pending_frames(limit=1000, after=after)
            if not pending:
                break
            for f in pending:
                job = InferJob(
                    f.camera_id,
                    f.sequence,
                    f.capture_time_us,
                    f.base,
                    FrameHeader(f.width, f.height, f.model_id),
                )
                await self.batcher.submit(FrameTask(job, None), key=f.camera_id)
                count += 1
            after = (pending[-1].camera_id, pending[-1].sequence)
        self.stats.recovered += count
        if count:
            log.info("recovered %d stored frames that had no result yet", count)
        return count

    # -- unary inference ----------------------------------------------------------------------------
    async def infer_base(self, base: bytes, camera_id: str = "") -> common_pb2.Result:
        """Run one base bitstream through the batcher (not stored, not published), after the
        cameras' frames waiting at the time (low priority)."""
        header = self.engine.check_base(base)
        fut = await self.batcher.submit(
            AdhocTask(InferJob(camera_id, 0, 0, base, header)), key=None, low_priority=True
        )
        return await fut

    # -- batch execution (worker thread) -------------------------------------------------------------
    def _infer(self, tasks: list[FrameTask | AdhocTask]) -> list[common_pb2.Result | LayercastError]:
        return self.engine.run_batch([t.job for t in tasks])

    # -- results (event loop, in per-camera order) ---------------------------------------------------
    async def _complete(self, done: list[Done[FrameTask | AdhocTask, common_pb2.Result]]) -> None:
        frames = [d for d in done if isinstance(d.item, FrameTask)]
        ok = [d for d in frames if d.error is None and d.result is not None]
        failed = [d for d in frames if d.error is not None]
        if ok:
            await self.store.put_results(
                ResultRecord(
                    d.item.job.camera_id,
                    d.item.job.sequence,
                    d.result.processed_time_us,
                    d.result.SerializeToString(),
                )
                for d in ok
                if d.result is not None
            )
            self.stats.results += len(ok)
            for d in ok:
                assert d.result is not None
                self.hub.publish(d.result)
            if self._on_results is not None:
                self._on_results([d.result for d in ok if d.result is not None])
        for d in failed:
            job = d.item.job
            assert d.error is not None
            code = status_of(d.error)
            message = str(d.error) if isinstance(d.error, LayercastError) else "internal error while decoding"
            await self.store.mark_rejected(job.camera_id, job.sequence, code_number(code), message)
            self.stats.frames_rejected += 1
            self.stats.rejected_by_code[code.name] += 1
            log.info("camera %s frame %d failed: %s %s", job.camera_id, job.sequence, code.name, message)
            session = self.registry.get(job.camera_id)
            if session is not None and session.session_id == d.item.session_id:
                session.send(
                    edge_pb2.CloudMessage(
                        rejected=edge_pb2.FrameRejected(
                            sequence=job.sequence, code=code_number(code), message=message
                        )
                    )
                )
        credits: collections.Counter[tuple[str, str]] = collections.Counter()
        for d in frames:
            if d.item.holds_slot:
                self._backlog[d.item.job.camera_id].release()
                self._unfinished[d.item.job.camera_id] -= 1
            if d.item.session_id is not None:
                credits[(d.item.job.camera_id, d.item.session_id)] += 1
        for (cam, sid), n in credits.items():
            session = self.registry.get(cam)
            if session is not None and session.session_id == sid:
                session.send(_credits(n))
        if any(d.item.holds_slot for d in frames):
            async with self._finished:
                self._finished.notify_all()

    async def settled(self, camera_id: str) -> None:
        """Wait until every frame a stream of ``camera_id`` sent has its result stored and published
        (or its failure recorded): a camera moving to another cloud replica hands over in order."""
        async with self._finished:
            await self._finished.wait_for(lambda: self._unfinished[camera_id] <= 0)


class _Reject(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _credits(n: int) -> edge_pb2.CloudMessage:
    return edge_pb2.CloudMessage(credits=edge_pb2.Credits(credits=n))
