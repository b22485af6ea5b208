"""Client-side helpers of the fuzz tests: method paths, message builders, and the check that a
server is still fine after a fuzz run (health, a new frame stored and inferred, unary Infer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2

from layercast.shared.codec import bitstream
from layercast.shared.rpc import analytics_pb2, analytics_pb2_grpc, edge_pb2
from tests.fuzz.harness import CAMERAS, FuzzServer, Tally, bidi, report
from tests.fuzz.strategies import Samples

CONNECT = "/layercast.v1.EdgeLink/Connect"
SUBSCRIBE = "/layercast.v1.Analytics/Subscribe"
INFER = "/layercast.v1.Analytics/Infer"
LIST_CAMERAS = "/layercast.v1.Operator/ListCameras"
LIST_FRAMES = "/layercast.v1.Operator/ListFrames"
GET_PREVIEW = "/layercast.v1.Operator/GetPreview"
ENHANCE = "/layercast.v1.Operator/Enhance"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def code_number(code: grpc.StatusCode) -> int:
    return int(code.value[0])


def hello(camera: str, model_id: str, **extra: Any) -> bytes:
    """A serialized Hello with the camera's real token."""
    return edge_pb2.EdgeMessage(
        hello=edge_pb2.Hello(camera_id=camera, token=CAMERAS[camera], base_model_id=model_id, **extra)
    ).SerializeToString()


def frame(sequence: int, base: bytes, capture_time_us: int = 0, resent: bool = False) -> bytes:
    return edge_pb2.EdgeMessage(
        frame=edge_pb2.BaseFrame(sequence=sequence, capture_time_us=capture_time_us, base=base, resent=resent)
    ).SerializeToString()


def cloud_messages(responses: list[bytes]) -> list[edge_pb2.CloudMessage]:
    return [edge_pb2.CloudMessage.FromString(r) for r in responses]


def welcome_of(messages: list[edge_pb2.CloudMessage]) -> edge_pb2.Welcome:
    assert messages and messages[0].WhichOneof("kind") == "welcome", f"no Welcome first: {messages[:1]}"
    return messages[0].welcome


class Camera:
    """A long-lived, hand-driven EdgeLink stream that answers enhancement requests with ``answer``
    (a function of the request returning serialized EdgeMessages to send back, possibly none)."""

    def __init__(self, channel: aio.Channel, camera: str, model_id: str) -> None:
        self.camera = camera
        self._out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._out.put_nowait(hello(camera, model_id, next_sequence=1, capabilities=["enhancement"]))
        self.answer: Callable[[edge_pb2.EnhancementRequest], list[bytes]] = lambda _r: []
        self.welcome: asyncio.Future[edge_pb2.Welcome] = asyncio.get_running_loop().create_future()
        self.acks: asyncio.Queue[edge_pb2.CloudMessage] = asyncio.Queue()
        self.requests = 0
        self.call = channel.stream_stream(CONNECT)(self._requests())
        self._reader = asyncio.create_task(self._read())

    async def _requests(self) -> AsyncIterator[bytes]:
        while (item := await self._out.get()) is not None:
            yield item

    async def _read(self) -> None:
        async for raw in self.call:
            msg = edge_pb2.CloudMessage.FromString(raw)
            kind = msg.WhichOneof("kind")
            if kind == "welcome":
                self.welcome.set_result(msg.welcome)
            elif kind == "enhancement_request":
                self.requests += 1
                for reply in self.answer(msg.enhancement_request):
                    self._out.put_nowait(reply)
            elif kind in ("ack", "rejected"):
                self.acks.put_nowait(msg)

    def send(self, payload: bytes) -> None:
        self._out.put_nowait(payload)

    async def close(self) -> grpc.StatusCode:
        self._out.put_nowait(None)
        try:
            await asyncio.wait_for(self._reader, 30)
        except aio.AioRpcError:
            pass
        return await self.call.code()


async def _still_serving(fz: FuzzServer, samples: Samples) -> None:
    ch = fz.channel
    # a new frame of a camera is stored, acknowledged and inferred
    cam = Camera(ch, "fz-live", samples.model_id)
    welcome = await asyncio.wait_for(cam.welcome, 30)
    seq = welcome.last_acked_sequence + 1
    cam.send(frame(seq, samples.bases[0], capture_time_us=seq))
    answer = await asyncio.wait_for(cam.acks.get(), 30)
    assert answer.WhichOneof("kind") == "ack" and answer.ack.sequence == seq and not answer.ack.duplicate, (
        answer
    )
    assert await cam.close() == grpc.StatusCode.OK
    sub = analytics_pb2_grpc.AnalyticsStub(ch).Subscribe(
        analytics_pb2.SubscribeRequest(camera_ids=["fz-live"], resume_after={"fz-live": seq - 1}), timeout=60
    )
    event = await sub.read()
    sub.cancel()
    assert event.result.sequence == seq and event.result.camera_id == "fz-live", event
    # unary inference of a valid bitstream
    infer = analytics_pb2_grpc.AnalyticsStub(ch).Infer
    res = (await infer(analytics_pb2.InferRequest(base=samples.bases[1]), timeout=60)).result
    header = bitstream.parse_header(samples.bases[1])
    assert (res.height, res.width) == (header.height, header.width) and res.model_id == samples.model_id


def assert_still_serving(fz: FuzzServer, samples: Samples) -> None:
    """After a fuzz run: health SERVING, a valid frame accepted and inferred, Infer answers."""
    assert fz.health() == health_pb2.HealthCheckResponse.SERVING
    fz.run(_still_serving(fz, samples), timeout=120)
    # and a stream that never says Hello is still refused, promptly
    out = bidi(fz.sync_channel, CONNECT, [edge_pb2.EdgeMessage().SerializeToString()], timeout=20)
    assert out.code == grpc.StatusCode.UNAUTHENTICATED, out


def finish(fz: FuzzServer, samples: Samples, tally: Tally) -> dict[str, Any]:
    """End of a fuzz run: the server still serves, then the run's figures (memory bound checked)."""
    assert_still_serving(fz, samples)
    return report(tally)


async def store_frames(channel: aio.Channel, camera: str, frames: dict[int, bytes], model_id: str) -> Camera:
    """Connect ``camera`` and have ``frames`` (sequence → base) stored; returns the open stream."""
    cam = Camera(channel, camera, model_id)
    await asyncio.wait_for(cam.welcome, 30)
    for seq, base in frames.items():
        cam.send(frame(seq, base, capture_time_us=1000 * seq))
        answer = await asyncio.wait_for(cam.acks.get(), 30)
        assert answer.WhichOneof("kind") == "ack" and answer.ack.sequence == seq, answer
    return cam


async def wait_for_results(channel: aio.Channel, expected: dict[str, list[int]]) -> None:
    """Wait until every expected result is stored (a subscription replays them all)."""
    want = {(cam, s) for cam, seqs in expected.items() for s in seqs}
    call = analytics_pb2_grpc.AnalyticsStub(channel).Subscribe(
        analytics_pb2.SubscribeRequest(camera_ids=list(expected)), timeout=120
    )
    seen: set[tuple[str, int]] = set()
    async for event in call:
        seen.add((event.result.camera_id, event.result.sequence))
        if want <= seen:
            break
    call.cancel()
