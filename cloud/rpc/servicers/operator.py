"""Operator: browse cameras and frames, previews, enhancement on demand.

The servicer maps an :class:`OperatorApi` onto gRPC: :class:`LocalOperator` answers from this
process (its store, its camera streams); with several cloud replicas a cluster-aware API
(``layercast.cloud.cluster.operator``) answers from every replica and forwards to the one that
holds a camera or a frame, on top of the same :class:`LocalOperator`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol, TypeVar

from grpc import aio

from layercast.cloud.results.store import Store
from layercast.cloud.results.viewer import FrameViewer
from layercast.cloud.rpc.status import abort_with
from layercast.cloud.sessions import SessionRegistry
from layercast.shared.errors import LayercastError
from layercast.shared.rpc import operator_pb2, operator_pb2_grpc

T = TypeVar("T")


class OperatorApi(Protocol):
    """The Operator service as plain calls: request messages in, response messages out, typed errors."""

    async def list_cameras(
        self, request: operator_pb2.ListCamerasRequest
    ) -> operator_pb2.ListCamerasResponse: ...
    async def list_frames(
        self, request: operator_pb2.ListFramesRequest
    ) -> operator_pb2.ListFramesResponse: ...
    async def preview(self, request: operator_pb2.FrameRef) -> operator_pb2.Image: ...
    async def enhance(
        self, request: operator_pb2.EnhanceRequest, timeout_s: float | None
    ) -> operator_pb2.EnhanceResponse: ...


class LocalOperator:
    """The Operator API answered by this process alone."""

    def __init__(
        self,
        *,
        store: Store,
        registry: SessionRegistry,
        viewer: FrameViewer,
        default_limit: int,
        max_limit: int,
    ) -> None:
        self._store = store
        self._registry = registry
        self._viewer = viewer
        self.default_limit = min(default_limit, max_limit)
        self.max_limit = max_limit

    def limit_of(self, request: operator_pb2.ListFramesRequest) -> int:
        """How many frames a ListFrames request gets at most."""
        return min(request.limit or self.default_limit, self.max_limit)

    async def list_cameras(
        self, request: operator_pb2.ListCamerasRequest
    ) -> operator_pb2.ListCamerasResponse:
        cameras = await self._store.list_cameras()
        return operator_pb2.ListCamerasResponse(
            cameras=[
                operator_pb2.Camera(
                    camera_id=c.camera_id,
                    online=self._registry.is_online(c.camera_id),
                    base_model_id=c.base_model_id,
                    enhancement_model_id=c.enhancement_model_id,
                    last_sequence=c.last_sequence,
                    last_seen_us=c.last_seen_us,
                    frames_stored=c.frames_stored,
                    task=c.task,
                )
                for c in cameras
            ]
        )

    async def list_frames(self, request: operator_pb2.ListFramesRequest) -> operator_pb2.ListFramesResponse:
        frames = await self._store.list_frames(
            request.camera_id, before_sequence=request.before_sequence, limit=self.limit_of(request)
        )
        return operator_pb2.ListFramesResponse(
            frames=[
                operator_pb2.FrameInfo(
                    sequence=f.sequence,
                    capture_time_us=f.capture_time_us,
                    base_bytes=f.base_size,
                    base_bpp=f.bpp,
                    width=f.width,
                    height=f.height,
                    enhanced=self._viewer.is_enhanced(request.camera_id, f.sequence),
                )
                for f in frames
            ]
        )

    async def preview(self, request: operator_pb2.FrameRef) -> operator_pb2.Image:
        img = await self._viewer.preview(request.camera_id, request.sequence)
        return operator_pb2.Image(png=img.png, width=img.width, height=img.height)

    async def enhance(
        self, request: operator_pb2.EnhanceRequest, timeout_s: float | None
    ) -> operator_pb2.EnhanceResponse:
        out = await self._viewer.enhance(request.frame.camera_id, request.frame.sequence, timeout_s=timeout_s)
        response = operator_pb2.EnhanceResponse(
            reconstruction=operator_pb2.Image(
                png=out.image.png, width=out.image.width, height=out.image.height
            ),
            base_bytes=out.base_bytes,
            enhancement_bytes=out.enhancement_bytes,
            total_bpp=out.total_bpp,
            fetch_seconds=out.fetch_seconds,
            cached=out.cached,
        )
        if out.result is not None:
            response.result.CopyFrom(out.result)
        return response


class OperatorServicer(operator_pb2_grpc.OperatorServicer):
    """gRPC face of an :class:`OperatorApi`: typed errors become statuses."""

    def __init__(self, api: OperatorApi) -> None:
        self._api = api

    async def ListCameras(
        self, request: operator_pb2.ListCamerasRequest, context: aio.ServicerContext
    ) -> operator_pb2.ListCamerasResponse:
        return await _answer(context, self._api.list_cameras(request))

    async def ListFrames(
        self, request: operator_pb2.ListFramesRequest, context: aio.ServicerContext
    ) -> operator_pb2.ListFramesResponse:
        return await _answer(context, self._api.list_frames(request))

    async def GetPreview(
        self, request: operator_pb2.FrameRef, context: aio.ServicerContext
    ) -> operator_pb2.Image:
        return await _answer(context, self._api.preview(request))

    async def Enhance(
        self, request: operator_pb2.EnhanceRequest, context: aio.ServicerContext
    ) -> operator_pb2.EnhanceResponse:
        remaining = context.time_remaining()
        timeout_s = remaining if remaining is not None and remaining > 0 else None
        return await _answer(context, self._api.enhance(request, timeout_s))


async def _answer(context: aio.ServicerContext, call: Awaitable[T]) -> T:
    try:
        return await call
    except LayercastError as exc:
        await abort_with(context, exc)
        raise AssertionError("unreachable") from exc
