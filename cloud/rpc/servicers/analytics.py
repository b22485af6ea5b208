"""Analytics: Subscribe (replay then live, resumable) and unary Infer."""

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
from layercast.cloud.rpc.status import abort_with
from layercast.shared.errors import InvalidImage, LayercastError
from layercast.shared.rpc import analytics_pb2, analytics_pb2_grpc

#: Most cameras one subscription may name (in ``camera_ids`` and in ``resume_after`` each). Far above
#: any deployment's camera count; it bounds the store query a request builds (SQLite allows a fixed
#: number of parameters per statement, and the request limit alone lets through hundreds of thousands).
MAX_SUBSCRIBE_CAMERAS = 10_000


class AnalyticsServicer(analytics_pb2_grpc.AnalyticsServicer):
    def __init__(
        self, *, hub: Hub, pipeline: FramePipeline, engine: InferenceEngine, executor: Executor
    ) -> None:
        self._hub = hub
        self._pipeline = pipeline
        self._engine = engine
        self._executor = executor

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
