"""Analytics: Subscribe (replay then live, resumable) and unary Infer.

Infer is bounded (``limits.max_concurrent_infer`` calls at work, RESOURCE_EXHAUSTED above) and its
bitstreams are batched after the cameras' frames (low priority in the batcher), so a viewer
flooding Infer does not slow the cameras."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import Executor

import grpc
from grpc import aio

from layercast.cloud.ingest.engine import InferenceEngine
from layercast.cloud.ingest.images import encode_image
from layercast.cloud.ingest.pipeline import FramePipeline
from layercast.cloud.results.hub import Hub, Lagged
from layercast.cloud.rpc.limits import CallLimits, Slots
from layercast.cloud.rpc.status import abort_with
from layercast.shared.errors import InvalidImage, LayercastError
from layercast.shared.rpc import analytics_pb2, analytics_pb2_grpc

#: Most cameras one subscription may name (in ``camera_ids`` and in ``resume_after`` each). Far above
#: any deployment's camera count; it bounds the store query a request builds (SQLite allows a fixed
#: number of parameters per statement, and the request limit alone lets through hundreds of thousands).
MAX_SUBSCRIBE_CAMERAS = 10_000


class AnalyticsServicer(analytics_pb2_grpc.AnalyticsServicer):
    def __init__(
        self,
        *,
        hub: Hub,
        pipeline: FramePipeline,
        engine: InferenceEngine,
        executor: Executor,
        limits: CallLimits | None = None,
        max_concurrent_infer: int = 4,
        max_id_length: int = 128,
    ) -> None:
        self._hub = hub
        self._pipeline = pipeline
        self._engine = engine
        self._executor = executor
        self._limits = limits
        #: Infer calls at work at a time (image decoding, encoding and inference, after camera frames).
        self.infer_slots = Slots(max_concurrent_infer)
        self._max_id_length = max_id_length

    async def Subscribe(
        self, request: analytics_pb2.SubscribeRequest, context: aio.ServicerContext
    ) -> AsyncIterator[analytics_pb2.SubscribeEvent]:
        for name, count in (
            ("camera_ids", len(request.camera_ids)),
            ("resume_after", len(request.resume_after)),
        ):
            if count > MAX_SUBSCRIBE_CAMERAS:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{name} names {count} cameras; a subscription may name at most {MAX_SUBSCRIBE_CAMERAS}",
                )
        if any(len(c) > self._max_id_length for c in (*request.camera_ids, *request.resume_after)):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"a camera id is longer than {self._max_id_length} characters (limits.max_id_length)",
            )
        events = self._hub.follow(
            cameras=list(request.camera_ids),
            resume_after=dict(request.resume_after),
            from_sequence=request.from_sequence,
            live_only=request.live_only,
        )
        lagged: Lagged | None = None
        try:
            async for event in events:
                if isinstance(event, Lagged):
                    lagged = event
                    yield analytics_pb2.SubscribeEvent(
                        lagged=analytics_pb2.Lagged(resume_after=event.resume_after, message=event.message)
                    )
                    break
                yield analytics_pb2.SubscribeEvent(result=event)
        except LayercastError as exc:
            await abort_with(context, exc)
        finally:
            await events.aclose()
        if lagged is not None:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, lagged.message)

    async def Infer(
        self, request: analytics_pb2.InferRequest, context: aio.ServicerContext
    ) -> analytics_pb2.InferResponse:
        if len(request.camera_id) > self._max_id_length:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"camera_id is longer than {self._max_id_length} characters (limits.max_id_length)",
            )
        if not self.infer_slots.take():
            if self._limits is not None:
                self._limits.refused["infer"] += 1
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.infer_slots.limit} Infer calls are at work already (limits.max_concurrent_infer; "
                "camera frames come first); retry later",
            )
        try:
            return await self._infer(request, context)
        finally:
            self.infer_slots.give()

    async def _infer(
        self, request: analytics_pb2.InferRequest, context: aio.ServicerContext
    ) -> analytics_pb2.InferResponse:
        try:
            kind = request.WhichOneof("input")
            if kind == "image":
                loop = asyncio.get_running_loop()
                base = await loop.run_in_executor(self._executor, encode_image, self._engine, request.image)
            elif kind == "base":
                base = request.base
            else:
                raise InvalidImage("InferRequest needs an image or a base bitstream")
            result = await self._pipeline.infer_base(base, camera_id=request.camera_id)
        except LayercastError as exc:
            await abort_with(context, exc)
            raise AssertionError("unreachable") from exc
        return analytics_pb2.InferResponse(result=result)
