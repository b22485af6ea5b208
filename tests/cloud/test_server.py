"""A real grpc.aio CloudServer on 127.0.0.1 with real client stubs and real bitstreams."""

from __future__ import annotations

import asyncio
import io
import logging
import threading

import grpc
import numpy as np
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from layercast.cloud.results.records import ReplayQuery
from layercast.cloud.results.sqlite import SqliteStore
from layercast.cloud.security.credentials import hash_token
from layercast.cloud.server import SERVICE_NAMES, CloudServer
from layercast.shared.rpc import analytics_pb2, analytics_pb2_grpc, edge_pb2, operator_pb2, operator_pb2_grpc
from tests.cloud.conftest import (
    TOKENS,
    EdgeStream,
    cloud_config,
    make_task_codec,
    operator_channel,
    stored_frame,
)


def png_array(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


async def connect(channel: aio.Channel, codec, cam: str = "cam-a") -> tuple[EdgeStream, edge_pb2.Welcome]:
    e = EdgeStream(channel)
    e.hello(cam, TOKENS[cam], codec.base_model_id, next_sequence=1, capabilities=["enhancement"])
    return e, await e.recv_kind("welcome")


async def results(channel: aio.Channel, n: int, **request) -> list:
    call = analytics_pb2_grpc.AnalyticsStub(channel).Subscribe(analytics_pb2.SubscribeRequest(**request))
    out = []
    async for ev in call:
        out.append(ev.result)
        if len(out) == n:
            break
    call.cancel()
    return out


async def test_health_serving_and_reflection_lists_the_services(cloud):
    async with operator_channel(cloud.target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", *SERVICE_NAMES):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        call = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        listed = set()
        async for resp in call:
            listed |= {s.name for s in resp.list_services_response.service}
        assert set(SERVICE_NAMES) | {"grpc.health.v1.Health"} <= listed


async def test_not_serving_until_warm(tmp_path, task_codec):
    gate = threading.Event()

    class SlowToWarm:
        """The real codec, whose first encode (the warm-up) waits for the test."""

        def __getattr__(self, name):
            return getattr(task_codec, name)

        def encode_batch(self, images, layers="all"):
            gate.wait(20)
            return task_codec.encode_batch(images, layers)

    server = CloudServer(cloud_config(tmp_path), codec=SlowToWarm())
    starting = asyncio.create_task(server.start())
    try:
        while server.port is None:
            await asyncio.sleep(0.01)
        async with operator_channel(server.target) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            resp = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(aio.AioRpcError) as info:
                await operator_pb2_grpc.OperatorStub(ch).ListCameras(
                    operator_pb2.ListCamerasRequest(), timeout=5
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "warming up" in info.value.details()
            gate.set()
            await asyncio.wait_for(starting, 30)
            resp = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        gate.set()
        await server.stop(2)


async def test_frames_are_acked_deduplicated_rejected_and_results_arrive_in_order(cloud, task_codec, frames):
    async with operator_channel(cloud.target) as ch:
        e, welcome = await connect(ch, task_codec)
        assert welcome.initial_credits == cloud.config.credits_per_camera
        assert (
            welcome.last_acked_sequence == 0
            and welcome.max_frame_bytes == cloud.config.limits.max_frame_bytes
        )
        acks, rejected, credits = [], [], [0]

        async def read_until(n_answers: int = 0, n_credits: int = 0) -> None:
            while len(acks) + len(rejected) < n_answers or credits[0] < n_credits:
                msg = await e.recv()
                kind = msg.WhichOneof("kind")
                if kind == "ack":
                    acks.append((msg.ack.sequence, msg.ack.duplicate))
                elif kind == "rejected":
                    rejected.append(msg.rejected)
                elif kind == "credits":
                    credits[0] += msg.credits.credits

        for seq in range(1, 5):
            e.frame(seq, frames[seq - 1].base)
        e.frame(2, frames[1].base, resent=True)  # a resend after a reconnect
        e.frame(5, b"garbage that is not a bitstream")
        e.frame(6, frames[5].base)  # the stream goes on after a bad frame
        await read_until(7)
        assert acks == [(1, False), (2, False), (3, False), (4, False), (2, True), (6, False)]
        assert [(r.sequence, r.code) for r in rejected] == [(5, grpc.StatusCode.INVALID_ARGUMENT.value[0])]
        assert rejected[0].message

        got = await asyncio.wait_for(results(ch, 5, camera_ids=["cam-a"]), 60)
        assert [r.sequence for r in got] == [1, 2, 3, 4, 6]
        # detections equal an offline decode + inference of the same bytes
        offline = task_codec.infer(task_codec.decode_base_batch([frames[2].base]))[0]
        r3 = got[2]
        assert r3.capture_time_us == 3000 and r3.base_bytes == len(frames[2].base)
        np.testing.assert_allclose(
            np.array([[b.x1, b.y1, b.x2, b.y2] for b in r3.boxes]).reshape(-1, 4), offline.boxes, rtol=1e-6
        )
        # each of the 7 frames sent spent a credit; the cloud gives each back once done with it
        await read_until(n_credits=7)
        assert credits[0] == 7
        with pytest.raises(TimeoutError):
            await e.recv(0.3)  # and no more than that

        cams = (
            await operator_pb2_grpc.OperatorStub(ch).ListCameras(operator_pb2.ListCamerasRequest())
        ).cameras
        [cam] = [c for c in cams if c.camera_id == "cam-a"]
        assert cam.online and cam.last_sequence == 6 and cam.frames_stored == 5 and cam.task == "detection"
        e.close()

        # a reconnect learns what was stored; resends are acknowledged as duplicates
        e2, welcome2 = await connect(ch, task_codec)
        assert welcome2.last_acked_sequence == 6
        e2.frame(6, frames[5].base, resent=True)
        assert (await e2.recv_kind("ack")).duplicate
        e2.close()


@pytest.mark.parametrize(
    ("cam", "token", "model", "code", "needle"),
    [
        ("cam-a", "wrong-token", None, grpc.StatusCode.UNAUTHENTICATED, "credentials"),
        # a valid token of cam-a used to claim another camera
        ("cam-zzz", TOKENS["cam-a"], None, grpc.StatusCode.PERMISSION_DENIED, "another camera"),
        ("cam-b", TOKENS["cam-a"], None, grpc.StatusCode.PERMISSION_DENIED, "another camera"),
        (
            "cam-a",
            TOKENS["cam-a"],
            "0123456789abcdef",
            grpc.StatusCode.FAILED_PRECONDITION,
            "0123456789abcdef",
        ),
    ],
)
async def test_hello_is_checked(cloud, task_codec, cam, token, model, code, needle):
    async with operator_channel(cloud.target) as ch:
        e = EdgeStream(ch)
        e.hello(cam, token, model or task_codec.base_model_id)
        with pytest.raises(aio.AioRpcError) as info:
            await e.recv()
        assert info.value.code() == code and needle in info.value.details()
        assert token not in info.value.details()


async def test_first_message_must_be_hello(cloud, frames):
    async with operator_channel(cloud.target) as ch:
        e = EdgeStream(ch)
        e.frame(1, frames[0].base)
        with pytest.raises(aio.AioRpcError) as info:
            await e.recv()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_frame_from_another_model_is_refused_with_its_id(cloud, task_codec, frames):
    other = make_task_codec(seed=5)
    foreign = other.encode_batch([np.full((64, 64, 3), 128, np.uint8)], layers="base")[0].base
    async with operator_channel(cloud.target) as ch:
        e, _ = await connect(ch, task_codec)
        e.frame(1, foreign)
        rej = await e.recv_kind("rejected")
        assert rej.code == grpc.StatusCode.FAILED_PRECONDITION.value[0] and other.base_model_id in rej.message
        e.frame(2, frames[0].base)
        assert (await e.recv_kind("ack")).sequence == 2
        e.close()


async def test_size_limits(tmp_path, task_codec, frames):
    cfg = cloud_config(
        tmp_path, **{"limits.max_message_bytes": 256 << 10, "limits.max_frame_bytes": 64 << 10}
    )
    server = CloudServer(cfg, codec=task_codec)
    await server.start()
    try:
        async with operator_channel(server.target, options=[("grpc.max_send_message_length", 8 << 20)]) as ch:
            infer = analytics_pb2_grpc.AnalyticsStub(ch).Infer
            with pytest.raises(aio.AioRpcError) as info:
                await infer(analytics_pb2.InferRequest(image=b"\x89PNG" + bytes(300 << 10)), timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # a frame over max_frame_bytes but inside a message: that frame is refused, the stream goes on
            e, _ = await connect(ch, task_codec)
            e.frame(1, frames[0].base + bytes(100 << 10))
            rej = await e.recv_kind("rejected")
            assert rej.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            e.frame(2, frames[0].base)
            assert (await e.recv_kind("ack")).sequence == 2
            e.close()
    finally:
        await server.stop(5)


async def test_enhancement_on_demand(tmp_path, task_codec, frames):
    server = CloudServer(cloud_config(tmp_path, enhancement_timeout_s=0.5), codec=task_codec)
    await server.start()
    try:
        async with operator_channel(server.target) as ch:
            op = operator_pb2_grpc.OperatorStub(ch)
            with pytest.raises(aio.AioRpcError) as info:
                await op.Enhance(
                    operator_pb2.EnhanceRequest(frame=operator_pb2.FrameRef(camera_id="cam-a", sequence=1))
                )
            assert info.value.code() == grpc.StatusCode.NOT_FOUND  # not stored in the cloud

            e, _ = await connect(ch, task_codec)
            for seq in (1, 2, 3):
                e.frame(seq, frames[seq].base)
            for _ in range(3):
                await e.recv_kind("ack")

            # 1: the edge answers with the real enhancement layer
            call = asyncio.ensure_future(
                op.Enhance(
                    operator_pb2.EnhanceRequest(frame=operator_pb2.FrameRef(camera_id="cam-a", sequence=2))
                )
            )
            req = await e.recv_kind("enhancement_request")
            assert req.sequence == 2
            e.send(
                enhancement=edge_pb2.EnhancementResponse(
                    request_id=req.request_id, sequence=2, enhancement=frames[2].enhancement
                )
            )
            resp = await asyncio.wait_for(call, 30)
            dec = task_codec.decode_base_batch([frames[2].base])[0]
            assert np.array_equal(
                png_array(resp.reconstruction.png), task_codec.reconstruct(dec, frames[2].enhancement)
            )
            assert resp.base_bytes == len(frames[2].base) and resp.enhancement_bytes == len(
                frames[2].enhancement
            )
            assert resp.total_bpp == pytest.approx(8 * (resp.base_bytes + resp.enhancement_bytes) / (64 * 64))
            assert not resp.cached and resp.fetch_seconds > 0
            again = await op.Enhance(
                operator_pb2.EnhanceRequest(frame=operator_pb2.FrameRef(camera_id="cam-a", sequence=2))
            )
            assert again.cached and again.reconstruction.png == resp.reconstruction.png
            listed = (await op.ListFrames(operator_pb2.ListFramesRequest(camera_id="cam-a"))).frames
            assert [(f.sequence, f.enhanced) for f in listed] == [(3, False), (2, True), (1, False)]

            # the preview is the codec's base-only synthesis
            prev = await op.GetPreview(operator_pb2.FrameRef(camera_id="cam-a", sequence=1))
            d1 = task_codec.decode_base_batch([frames[1].base])[0]
            assert np.array_equal(png_array(prev.png), task_codec.preview(d1))

            # 2: expired at the edge → NOT_FOUND
            call = asyncio.ensure_future(
                op.Enhance(
                    operator_pb2.EnhanceRequest(frame=operator_pb2.FrameRef(camera_id="cam-a", sequence=1))
                )
            )
            req = await e.recv_kind("enhancement_request")
            e.send(
                enhancement=edge_pb2.EnhancementResponse(
                    request_id=req.request_id,
                    sequence=1,
                    unavailable=edge_pb2.EnhancementUnavailable(
                        reason=edge_pb2.EnhancementUnavailable.EXPIRED
                    ),
                )
            )
            with pytest.raises(aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.NOT_FOUND and "retention" in info.value.details()

            # 3: no answer in time → DEADLINE_EXCEEDED
            with pytest.raises(aio.AioRpcError) as info:
                await op.Enhance(
                    operator_pb2.EnhanceRequest(frame=operator_pb2.FrameRef(camera_id="cam-a", sequence=3)),
                    timeout=10,
                )
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

            # 4: camera offline → UNAVAILABLE
            e.close()
            while server.registry.is_online("cam-a"):
                await asyncio.sleep(0.01)
            with pytest.raises(aio.AioRpcError) as info:
                await op.Enhance(
                    operator_pb2.EnhanceRequest(frame=operator_pb2.FrameRef(camera_id="cam-a", sequence=3))
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "offline" in info.value.details()
    finally:
        await server.stop(5)


async def test_unary_infer(cloud, task_codec, frames):
    async with operator_channel(cloud.target) as ch:
        infer = analytics_pb2_grpc.AnalyticsStub(ch).Infer
        r = (
            await infer(analytics_pb2.InferRequest(base=frames[0].base, camera_id="adhoc"), timeout=30)
        ).result
        offline = task_codec.infer(task_codec.decode_base_batch([frames[0].base]))[0]
        assert r.camera_id == "adhoc" and len(r.boxes) == offline.num_detections and r.width == 64
        buf = io.BytesIO()
        Image.fromarray(np.full((40, 56, 3), 90, np.uint8)).save(buf, format="PNG")
        r2 = (await infer(analytics_pb2.InferRequest(image=buf.getvalue()), timeout=30)).result
        assert (r2.width, r2.height) == (56, 40)
        with pytest.raises(aio.AioRpcError) as info:
            await infer(analytics_pb2.InferRequest(base=b"nonsense"), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_operator_tokens_when_configured(tmp_path, task_codec):
    cfg = cloud_config(tmp_path, **{"auth.operator_tokens": ["alice=" + hash_token("op-secret")]})
    server = CloudServer(cfg, codec=task_codec)
    await server.start()
    try:
        async with aio.insecure_channel(server.target) as ch:
            op = operator_pb2_grpc.OperatorStub(ch)
            with pytest.raises(aio.AioRpcError) as info:
                await op.ListCameras(operator_pb2.ListCamerasRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(aio.AioRpcError) as info:
                await op.ListCameras(
                    operator_pb2.ListCamerasRequest(), metadata=[("authorization", "Bearer nope")], timeout=5
                )
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            ok = await op.ListCameras(
                operator_pb2.ListCamerasRequest(), metadata=[("authorization", "Bearer op-secret")], timeout=5
            )
            assert list(ok.cameras) == []
            health = health_pb2_grpc.HealthStub(ch)  # health stays open for probes
            assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status == 1
    finally:
        await server.stop(5)


async def test_stop_drains_acknowledged_frames_and_restart_recovers_the_rest(tmp_path, task_codec, frames):
    cfg = cloud_config(tmp_path, **{"batching.max_queue_delay_ms": 60_000, "batching.max_batch_size": 64})
    server = CloudServer(cfg, codec=task_codec)
    await server.start()
    async with operator_channel(server.target) as ch:
        e, _ = await connect(ch, task_codec)
        for seq in (1, 2, 3):
            e.frame(seq, frames[seq].base)
        for _ in range(3):
            await e.recv_kind("ack")
        # the batcher waits a minute for a fuller batch; stopping must not wait for that, nor lose them
        await asyncio.wait_for(server.stop(30), 30)
        with pytest.raises((aio.AioRpcError, EOFError)):
            while True:
                await e.recv(5)
    db = SqliteStore(cfg.db_path)
    assert [r.sequence for r in db.results_after(ReplayQuery())] == [1, 2, 3]
    assert db.pending_frames() == []
    # simulate a crash between Ack and inference: frames stored, no result yet
    for seq in (4, 5):
        db.put_frame(stored_frame("cam-a", seq, frames[seq].base, capture_time_us=seq, received_us=seq))
    db.close()

    server = CloudServer(cloud_config(tmp_path), codec=task_codec)  # same data dir, normal batching
    await server.start()
    try:
        assert server.pipeline.stats.recovered == 2
        async with operator_channel(server.target) as ch:
            got = await asyncio.wait_for(results(ch, 5), 60)
            assert [r.sequence for r in got] == [1, 2, 3, 4, 5]  # exactly once each, in order
            got = await asyncio.wait_for(results(ch, 2, resume_after={"cam-a": 3}), 60)
            assert [r.sequence for r in got] == [4, 5]
    finally:
        await server.stop(5)


async def test_a_camera_whose_backlog_is_full_is_paused_alone(tmp_path, task_codec, frames):
    stall_a = threading.Event()
    release = threading.Event()
    waited_out = threading.Event()

    class Stalling:
        """The real codec; while ``stall_a`` is set, inference involving camera A's frames waits."""

        def __getattr__(self, name):
            return getattr(task_codec, name)

        def infer(self, decs):
            if stall_a.is_set() and any(d.frame_ref in a_refs for d in decs) and not release.wait(15):
                waited_out.set()
            return task_codec.infer(decs)

    from layercast.shared.codec import bitstream

    a_refs = {bitstream.frame_ref_of(f.base) for f in frames[1:7]}
    cfg = cloud_config(
        tmp_path, credits_per_camera=2, **{"batching.max_batch_size": 1, "batching.workers": 3}
    )
    server = CloudServer(cfg, codec=Stalling())
    await server.start()
    try:
        async with operator_channel(server.target) as ch:
            a, _ = await connect(ch, task_codec, "cam-a")
            b, _ = await connect(ch, task_codec, "cam-b")
            stall_a.set()
            for seq in range(1, 7):
                a.frame(seq, frames[seq].base)
            acked = [(await a.recv_kind("ack")).sequence for _ in range(3)]
            assert acked == [1, 2, 3]  # two waiting for inference, the third waits for room: A is paused
            with pytest.raises(TimeoutError):
                await a.recv(0.5)
            # camera B is not slowed by A's full backlog
            for seq in (1, 2):
                b.frame(seq, frames[8 + seq].base)
            assert [(await b.recv_kind("ack")).sequence for _ in range(2)] == [1, 2]
            got_b = await asyncio.wait_for(results(ch, 2, camera_ids=["cam-b"]), 60)
            assert [r.sequence for r in got_b] == [1, 2]
            release.set()
            acked += [(await a.recv_kind("ack")).sequence for _ in range(3)]
            assert acked == [1, 2, 3, 4, 5, 6]
            got = await asyncio.wait_for(results(ch, 6, camera_ids=["cam-a"]), 60)
            assert [r.sequence for r in got] == [1, 2, 3, 4, 5, 6]
            a.close()
            b.close()
        assert not waited_out.is_set()  # B never had to wait for A's stalled frames
    finally:
        release.set()
        await server.stop(5)


async def test_request_ids_and_status_are_logged(cloud, caplog):
    caplog.set_level(logging.INFO, logger="layercast.cloud.rpc")
    async with operator_channel(cloud.target) as ch:
        op = operator_pb2_grpc.OperatorStub(ch)
        with pytest.raises(aio.AioRpcError):
            await op.GetPreview(
                operator_pb2.FrameRef(camera_id="nope", sequence=1),
                metadata=[("x-request-id", "req-42")],
                timeout=5,
            )

    def logged() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "layercast.cloud.rpc"]

    def found() -> bool:
        return any(
            "GetPreview" in m and "status=NOT_FOUND" in m and "request_id=req-42" in m for m in logged()
        )

    # the server logs after the status has gone out: on a busy machine the client can see it first
    deadline = asyncio.get_running_loop().time() + 10
    while not found() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert found(), logged()
