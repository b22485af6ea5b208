"""The page's only way to the cloud: its public gRPC API (Operator and Analytics).

:class:`CloudClient` owns one ``grpc.aio`` channel (created in the serving event
loop) and turns gRPC failures into :class:`CloudError`, which carries the HTTP
status to answer and a message a person understands.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import grpc
from grpc import aio

from layercast.cloud.security.roles import ON_BEHALF_OF_KEY
from layercast.cloud.web.settings import WebSettings
from layercast.shared.rpc import (
    analytics_pb2,
    analytics_pb2_grpc,
    common_pb2,
    operator_pb2,
    operator_pb2_grpc,
)
from layercast.shared.tls import open_channel, warn_insecure

#: Largest message accepted from the cloud (a reconstruction PNG of a large frame).
MAX_MESSAGE_BYTES = 64 << 20
#: Largest message the page sends (its requests are a few bytes).
MAX_SEND_BYTES = 1 << 20


@dataclass
class CloudError(Exception):
    """A failed cloud call, as the page reports it: a title, a sentence for a person, and the
    cloud's own words in ``details``."""

    http_status: int
    kind: str  # expired | offline | timeout | unreachable | not_authorised | bad_request | error
    title: str
    message: str
    grpc_code: str = ""
    details: str = ""

    def __str__(self) -> str:
        return f"{self.title}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {
            "error": self.kind,
            "title": self.title,
            "message": self.message,
            "details": self.details,
            "grpc_status": self.grpc_code,
        }


_UNREACHABLE = (
    "failed to connect",
    "connection refused",
    "dns resolution",
    "socket closed",
    "connect failed",
)


def map_rpc_error(exc: aio.AioRpcError, *, camera_id: str = "", sequence: int | None = None) -> CloudError:
    """A gRPC status → what the page says (expired frame, offline camera, …)."""
    code = exc.code()
    details = exc.details() or code.name
    name = code.name
    cam = camera_id or "the camera"
    frame = f"Frame {sequence} of {cam}" if sequence is not None else "This frame"
    if code == grpc.StatusCode.NOT_FOUND:
        return CloudError(
            404,
            "expired",
            "Frame expired",
            f"{frame} has expired: its enhancement layer is past the retention window and no longer kept, "
            "so only the base-layer preview and the results remain.",
            name,
            details,
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        if any(s in details.lower() for s in _UNREACHABLE):
            return CloudError(
                502, "unreachable", "Cloud unreachable", "The cloud server does not answer.", name, details
            )
        return CloudError(
            503,
            "offline",
            "Camera offline",
            f"Camera {cam} is offline, so the enhancement layer cannot be fetched now. "
            "Try again when the camera is back online.",
            name,
            details,
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return CloudError(
            504, "timeout", "No answer in time", f"Camera {cam} did not answer in time.", name, details
        )
    if code == grpc.StatusCode.PERMISSION_DENIED and "viewer role" in details:
        return CloudError(
            502,
            "not_authorised",
            "Page not allowed to enhance",
            "The cloud lets this page's operator token view but not enhance; add the page's operator "
            "name to the cloud's auth.enhancers.",
            name,
            details,
        )
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return CloudError(
            502,
            "not_authorised",
            "Page not authorised by the cloud",
            "The cloud refused this page's operator token; check the page's cloud_token setting.",
            name,
            details,
        )
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
        return CloudError(400, "bad_request", "Bad request", details, name, details)
    return CloudError(502, "error", "Cloud error", f"The cloud answered {name}.", name, details)


class CloudClient:
    """Typed calls to the cloud with deadlines and operator credentials."""

    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", 5_000),
        ]
        if settings.cloud_insecure:
            warn_insecure("operator page", settings.cloud_target)
        self.channel = open_channel(settings.cloud_target, settings.cloud_tls, options)
        self.operator = operator_pb2_grpc.OperatorStub(self.channel)
        self.analytics = analytics_pb2_grpc.AnalyticsStub(self.channel)
        self.metadata = (("authorization", f"Bearer {settings.cloud_token}"),) if settings.cloud_token else ()
        self._cameras: tuple[float, list[operator_pb2.Camera]] | None = None
        self._cameras_lock = asyncio.Lock()

    async def close(self) -> None:
        await self.channel.close()

    async def list_cameras(self, max_age_s: float = 1.0) -> list[operator_pb2.Camera]:
        """Cameras known to the cloud (answers shared by every browser for ``max_age_s``)."""
        async with self._cameras_lock:
            if self._cameras is not None and time.monotonic() - self._cameras[0] < max_age_s:
                return self._cameras[1]
            try:
                resp = await self.operator.ListCameras(
                    operator_pb2.ListCamerasRequest(),
                    metadata=self.metadata,
                    timeout=self.settings.rpc_timeout_s,
                )
            except aio.AioRpcError as exc:
                raise map_rpc_error(exc) from None
            cams = sorted(resp.cameras, key=lambda c: c.camera_id)
            self._cameras = (time.monotonic(), cams)
            return cams

    async def camera(self, camera_id: str) -> operator_pb2.Camera | None:
        return next((c for c in await self.list_cameras() if c.camera_id == camera_id), None)

    async def list_frames(
        self, camera_id: str, *, before: int = 0, limit: int = 100
    ) -> list[operator_pb2.FrameInfo]:
        try:
            resp = await self.operator.ListFrames(
                operator_pb2.ListFramesRequest(camera_id=camera_id, before_sequence=before, limit=limit),
                metadata=self.metadata,
                timeout=self.settings.rpc_timeout_s,
            )
        except aio.AioRpcError as exc:
            raise map_rpc_error(exc, camera_id=camera_id) from None
        return list(resp.frames)

    async def preview(self, camera_id: str, sequence: int) -> operator_pb2.Image:
        try:
            return await self.operator.GetPreview(
                operator_pb2.FrameRef(camera_id=camera_id, sequence=sequence),
                metadata=self.metadata,
                timeout=self.settings.rpc_timeout_s,
            )
        except aio.AioRpcError as exc:
            raise map_rpc_error(exc, camera_id=camera_id, sequence=sequence) from None

    async def enhance(
        self, camera_id: str, sequence: int, *, on_behalf_of: str = ""
    ) -> operator_pb2.EnhanceResponse:
        """Ask the cloud for a frame's reconstruction; ``on_behalf_of`` (the signed-in user) goes into
        the cloud's audit log as ``<page's operator>:<user>``."""
        metadata = self.metadata
        if on_behalf_of:
            metadata = (*metadata, (ON_BEHALF_OF_KEY, on_behalf_of))
        try:
            return await self.operator.Enhance(
                operator_pb2.EnhanceRequest(
                    frame=operator_pb2.FrameRef(camera_id=camera_id, sequence=sequence)
                ),
                metadata=metadata,
                timeout=self.settings.enhance_timeout_s,
            )
        except aio.AioRpcError as exc:
            raise map_rpc_error(exc, camera_id=camera_id, sequence=sequence) from None

    async def result(self, camera_id: str, sequence: int, timeout_s: float = 3.0) -> common_pb2.Result | None:
        """The stored result of one frame (a Subscribe from that sequence, first event only);
        None when the frame has no result (rejected, or past the cloud's retention)."""
        call = self.analytics.Subscribe(
            analytics_pb2.SubscribeRequest(camera_ids=[camera_id], from_sequence=max(1, sequence)),
            metadata=self.metadata,
            timeout=timeout_s,
        )
        try:
            async for event in call:
                if event.WhichOneof("kind") != "result":
                    return None
                return event.result if event.result.sequence == sequence else None
        except aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return None  # nothing stored from that sequence on, and nothing new arrived
            raise map_rpc_error(exc, camera_id=camera_id, sequence=sequence) from None
        finally:
            call.cancel()
        return None

    def subscribe_live(self) -> aio.UnaryStreamCall:
        """Live results of every camera (no stored backlog)."""
        return self.analytics.Subscribe(
            analytics_pb2.SubscribeRequest(live_only=True), metadata=self.metadata
        )
