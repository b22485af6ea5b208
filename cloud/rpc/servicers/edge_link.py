"""EdgeLink.Connect: one long-lived stream per camera (see edge.proto).

The only place the frame path speaks protobuf: the pipeline's events (Acked, Rejected,
CreditsBack, IntraNeeded) become Ack, FrameRejected, Credits and IntraRequest messages here
(:func:`to_message`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
from grpc import aio

from layercast.cloud.ingest.engine import InferenceEngine
from layercast.cloud.ingest.frame import Acked, CreditsBack, FrameEvent, IntraNeeded, Rejected
from layercast.cloud.ingest.pipeline import FramePipeline
from layercast.cloud.results.store import Store
from layercast.cloud.rpc.limits import CallLimits
from layercast.cloud.rpc.status import abort_with, bounded, code_number
from layercast.cloud.security.auth import CameraAuthenticator
from layercast.cloud.security.ratelimit import KeyedLimiter
from layercast.cloud.sessions import (
    DEFAULT_OUTGOING_QUEUE,
    CameraSession,
    EnhancementRouter,
    Presence,
    SessionRegistry,
)
from layercast.shared.clock import now_us
from layercast.shared.errors import (
    InvalidArgument,
    LayercastError,
    PermissionDenied,
    ServiceClosing,
    Unauthenticated,
)
from layercast.shared.rpc import edge_pb2, edge_pb2_grpc

log = logging.getLogger(__name__)

#: Most capabilities a Hello may list, and the longest token it may carry.
MAX_CAPABILITIES = 32
MAX_TOKEN_LENGTH = 4096


def check_hello_sizes(hello: edge_pb2.Hello, max_id_length: int) -> None:
    """INVALID_ARGUMENT when a Hello's strings are longer than what is ever stored or compared."""
    for name, value in (
        ("camera_id", hello.camera_id),
        ("base_model_id", hello.base_model_id),
        ("enhancement_model_id", hello.enhancement_model_id),
        ("temporal_model_id", hello.temporal_model_id),
        ("software_version", hello.software_version),
    ):
        if len(value) > max_id_length:
            raise InvalidArgument(
                f"Hello.{name} is {len(value)} characters; at most {max_id_length} (limits.max_id_length)"
            )
    if len(hello.token) > MAX_TOKEN_LENGTH:
        raise InvalidArgument(f"Hello.token is longer than {MAX_TOKEN_LENGTH} characters")
    if len(hello.capabilities) > MAX_CAPABILITIES or any(len(c) > max_id_length for c in hello.capabilities):
        raise InvalidArgument(
            f"Hello.capabilities: at most {MAX_CAPABILITIES} entries of {max_id_length} characters"
        )


def to_message(event: FrameEvent) -> edge_pb2.CloudMessage:
    """What the camera receives for a pipeline event."""
    match event:
        case Acked(sequence, duplicate):
            return edge_pb2.CloudMessage(ack=edge_pb2.Ack(sequence=sequence, duplicate=duplicate))
        case Rejected(sequence, code, message):
            rejected = edge_pb2.FrameRejected(sequence=sequence, code=code_number(code), message=message)
            return edge_pb2.CloudMessage(rejected=rejected)
        case CreditsBack(count):
            return edge_pb2.CloudMessage(credits=edge_pb2.Credits(credits=count))
        case IntraNeeded(_, sequence, reason, message):
            request = edge_pb2.IntraRequest(
                reason=edge_pb2.IntraRequest.Reason.Value(reason), sequence=sequence, message=message
            )
            return edge_pb2.CloudMessage(intra_request=request)
    raise TypeError(f"not a frame event: {event!r}")


def send_event(session: CameraSession, event: FrameEvent) -> None:
    """Queue ``event`` down ``session``'s stream (dropped once the stream has ended)."""
    session.send(to_message(event))


class EdgeLinkServicer(edge_pb2_grpc.EdgeLinkServicer):
    def __init__(
        self,
        *,
        auth: CameraAuthenticator,
        engine: InferenceEngine,
        pipeline: FramePipeline,
        registry: SessionRegistry,
        router: EnhancementRouter,
        store: Store,
        credits: int,
        heartbeat_interval_ms: int,
        max_frame_bytes: int,
        hello_timeout_s: float,
        frame_limiter: KeyedLimiter | None = None,
        presence: Presence | None = None,
        limits: CallLimits | None = None,
        outgoing_queue: int = DEFAULT_OUTGOING_QUEUE,
        max_id_length: int = 128,
    ) -> None:
        #: Streams waiting for their Hello at a time (None = unbounded).
        self._limits = limits
        self._outgoing_queue = outgoing_queue
        self._max_id_length = max_id_length
        self._auth = auth
        self._engine = engine
        self._pipeline = pipeline
        self._registry = registry
        self._router = router
        self._store = store
        self._credits = credits
        self._heartbeat_ms = heartbeat_interval_ms
        self._max_frame_bytes = max_frame_bytes
        self._hello_timeout_s = hello_timeout_s
        #: Frames per second per camera: above it the stream is read more slowly (never refused).
        self._frame_limiter = frame_limiter
        #: Scale-out: records in the shared store that this replica holds the camera (None = embedded).
        self._presence = presence

    async def Connect(
        self, request_iterator: AsyncIterator[edge_pb2.EdgeMessage], context: aio.ServicerContext
    ) -> AsyncIterator[edge_pb2.CloudMessage]:
        requests = request_iterator.__aiter__()
        slots = self._limits.pending_hellos if self._limits is not None else None
        if slots is not None and not slots.take():
            self._limits.refused["pending_hellos"] += 1  # type: ignore[union-attr]
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many streams waiting for their Hello ({slots.limit}, limits.max_pending_hellos); "
                "retry later",
            )
            return
        try:
            first = await asyncio.wait_for(anext(requests), self._hello_timeout_s)
        except (TimeoutError, StopAsyncIteration):
            self._auth.refusals.count("no_hello")
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "the first message on the stream must be a Hello"
            )
            return
        finally:
            if slots is not None:
                slots.give()
        if first.WhichOneof("kind") != "hello":
            self._auth.refusals.count("no_hello")
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "the first message on the stream must be a Hello"
            )
            return
        hello = first.hello
        try:
            check_hello_sizes(hello, self._max_id_length)
            camera_id = self._auth.authenticate(hello, context)
            self._engine.require_model(hello.base_model_id)
            self._engine.require_temporal_model(hello.temporal_model_id)
        except LayercastError as exc:
            await abort_with(context, exc)
            return
        camera = await self._store.register_camera(
            camera_id,
            base_model_id=hello.base_model_id,
            enhancement_model_id=hello.enhancement_model_id,
            task=self._engine.task,
            now_us=now_us(),
        )
        session = CameraSession(camera_id, hello, outgoing=asyncio.Queue(maxsize=self._outgoing_queue))
        self._registry.attach(session)
        log.info(
            "camera %s connected (session %s, next sequence %d, last stored %d)",
            camera_id,
            session.session_id,
            hello.next_sequence,
            camera.last_sequence,
        )
        reader: asyncio.Task[None] | None = None
        try:
            if self._presence is not None:
                # Before reading frames and the Welcome: the replica the camera streamed to before
                # hands over (its results first), then every replica routes to this one.
                await self._presence.attached(session)
            reader = asyncio.create_task(self._read(requests, session), name=f"edge-read-{camera_id}")
            yield edge_pb2.CloudMessage(
                welcome=edge_pb2.Welcome(
                    session_id=session.session_id,
                    initial_credits=self._credits,
                    last_acked_sequence=camera.last_sequence,
                    heartbeat_interval_ms=self._heartbeat_ms,
                    max_frame_bytes=self._max_frame_bytes,
                )
            )
            self._pipeline.stream_opened(
                camera_id, predicts=bool(hello.temporal_model_id), seen_before=camera.last_sequence > 0
            )
            while True:
                message = await session.outgoing.get()
                if message is None:
                    break
                yield message
            status, text = session.end_reason or (None, "")
            if status is not None:
                await context.abort(grpc.StatusCode[status], bounded(text))
        finally:
            if reader is not None:
                reader.cancel()
            self._registry.detach(session)
            if self._presence is not None:
                self._presence.detached(session)
            try:
                await self._store.touch_camera(camera_id, now_us())
            except Exception:  # the store may already be closed at shutdown
                log.debug("could not record last-seen time of %s", camera_id, exc_info=True)
            log.info("camera %s disconnected (session %s)", camera_id, session.session_id)

    async def _read(self, requests: AsyncIterator[edge_pb2.EdgeMessage], session: CameraSession) -> None:
        """Handle the edge's messages one by one until it half-closes or the stream breaks."""
        last_touch = 0.0
        try:
            async for message in requests:
                if session.closed:
                    return
                session.last_seen_us = now_us()
                kind = message.WhichOneof("kind")
                if kind == "frame":
                    if self._frame_limiter is not None:
                        await self._frame_limiter.pace(session.camera_id)
                        if session.closed:
                            return
                    frame = message.frame
                    async for event in self._pipeline.ingest(
                        session, frame.sequence, frame.capture_time_us, frame.base
                    ):
                        send_event(session, event)
                elif kind == "enhancement":
                    self._router.resolve(session, message.enhancement)
                elif kind == "heartbeat":
                    session.queued_frames = message.heartbeat.queued_frames
                    session.dropped_frames = message.heartbeat.dropped_frames
                    loop_time = asyncio.get_running_loop().time()
                    if loop_time - last_touch > 1.0:
                        last_touch = loop_time
                        await self._store.touch_camera(session.camera_id, session.last_seen_us)
                elif kind == "hello":
                    raise Unauthenticated("a second Hello on an open stream is not allowed")
                # Unknown kinds (a newer edge) are ignored.
            session.end(None, "")
        except asyncio.CancelledError:
            raise
        except ServiceClosing as exc:
            session.end("UNAVAILABLE", str(exc))
        except PermissionDenied as exc:  # answered a request sent to another camera
            self._auth.refusals.count("answer_other_camera")
            session.end("PERMISSION_DENIED", str(exc))
        except LayercastError as exc:
            session.end(exc.grpc_status, str(exc))
        except (aio.AioRpcError, aio.AbortError, aio.UsageError):
            session.end("CANCELLED", "stream ended")
        except Exception:
            log.exception("edge stream of camera %s failed", session.camera_id)
            session.end("INTERNAL", "internal error (see the server log)")
