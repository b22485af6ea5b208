"""A camera streaming a low-delay video (the shipped det-tiny and its temporal model) through a
real cloud: P-frames decode in order, a lost reference asks the camera for an intra frame once,
a stream without a reference starts with one, and an unknown temporal model is refused."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc import aio

from layercast.cloud.ingest.frame import IntraNeeded
from layercast.cloud.results.png import encode_png
from layercast.cloud.rpc.servicers.edge_link import to_message
from layercast.cloud.server import CloudServer
from layercast.shared.codec import load_codec
from layercast.shared.codec.bitstream import LayerKind
from layercast.shared.codec.video import VideoEncoder
from layercast.shared.data.synth import SyntheticCamera
from layercast.shared.rpc import analytics_pb2, analytics_pb2_grpc, edge_pb2
from tests.cloud.conftest import TOKENS, EdgeStream, cloud_config, operator_channel

Reason = edge_pb2.IntraRequest.Reason


@pytest.fixture(scope="module")
def video():
    codec = load_codec("det-tiny", enhancement=None, device="cpu")
    cam = SyntheticCamera(9, 96, 96)
    enc = VideoEncoder(codec, intra_period=5)
    bases = [enc.encode(cam.frame(i).image, layers="base") for i in range(10)]
    assert [b.kind for b in bases] == ([LayerKind.BASE] + [LayerKind.PREDICTED] * 4) * 2
    return codec, [b.base for b in bases]


@pytest.fixture
async def server(tmp_path, video):
    codec, _ = video
    srv = CloudServer(cloud_config(tmp_path), codec=codec)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(5.0)


async def _messages(e: EdgeStream, until, timeout: float = 60.0) -> list[edge_pb2.CloudMessage]:
    out: list[edge_pb2.CloudMessage] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not until(out):
        out.append(await e.recv(max(0.1, deadline - loop.time())))
    return out


def _of(msgs, kind):
    return [getattr(m, kind) for m in msgs if m.WhichOneof("kind") == kind]


def test_intra_needed_becomes_an_intra_request():
    msg = to_message(IntraNeeded("cam", 4, "REFERENCE_MISMATCH", "no such reference"))
    assert msg.intra_request == edge_pb2.IntraRequest(
        reason=Reason.REFERENCE_MISMATCH, sequence=4, message="no such reference"
    )


async def _decoded(server, kind: str, count: int) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while server.engine.decoded_by_kind[kind] < count and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)


async def test_a_lost_reference_asks_for_one_intra_frame_and_the_next_intra_restarts(server, video):
    codec, bases = video
    async with operator_channel(server.target) as ch:
        e = EdgeStream(ch)
        e.hello("cam-a", TOKENS["cam-a"], codec.base_model_id, temporal_model_id=codec.temporal_model_id)
        await e.recv_kind("welcome")  # a camera new to this cloud starts with an intra frame anyway
        for seq in (1, 2):
            e.frame(seq, bases[seq - 1])
        msgs = await _messages(e, lambda m: len(_of(m, "ack")) == 2)
        await _decoded(server, "predicted", 1)  # (an intra frame that decodes ends an earlier request)
        for seq in (4, 5, 6, 7):  # frame 3 is lost on the way
            e.frame(seq, bases[seq - 1])
        msgs += await _messages(e, lambda m: len(_of(m, "ack")) == 2 and len(_of(m, "rejected")) == 2)
        assert [a.sequence for a in _of(msgs, "ack")] == [1, 2, 6, 7]
        # 4 and 5 name a frame this cloud never stored: their size is unknown, they are refused unstored
        rejected = _of(msgs, "rejected")
        assert [r.sequence for r in rejected] == [4, 5]
        assert all(r.code == grpc.StatusCode.FAILED_PRECONDITION.value[0] for r in rejected)
        assert "has not stored it: the camera must send an intra frame" in rejected[0].message
        [asked] = _of(msgs, "intra_request")  # once, not again for frame 5
        assert (asked.reason, asked.sequence) == (Reason.REFERENCE_MISMATCH, 4)
        e.close()
    assert await server.store.get_frame("cam-a", 4) is None
    assert await server.store.get_frame("cam-a", 5) is None
    engine, stats = server.engine, server.pipeline.stats
    await _decoded(server, "predicted", 2)
    assert engine.decoded_by_kind == {"intra": 2, "predicted": 2}  # 1, 6 and 2, 7
    assert dict(stats.intra_requests) == {"REFERENCE_MISMATCH": 1}
    registry = server.metrics.registry
    assert registry.get_sample_value("layercast_cloud_frames_decoded_total", {"kind": "predicted"}) == 2
    assert (
        registry.get_sample_value("layercast_cloud_intra_requests_total", {"reason": "reference_mismatch"})
        == 1
    )
    assert registry.get_sample_value("layercast_cloud_intra_requests_total", {"reason": "decode_failed"}) == 0


async def test_a_reconnect_without_a_reference_asks_at_once_and_the_stored_chain_still_decodes(server, video):
    codec, bases = video
    async with operator_channel(server.target) as ch:
        e = EdgeStream(ch)
        e.hello("cam-a", TOKENS["cam-a"], codec.base_model_id, temporal_model_id=codec.temporal_model_id)
        await e.recv_kind("welcome")
        e.frame(1, bases[0])
        assert (await e.recv_kind("ack")).sequence == 1
        e.close()
        await _decoded(server, "intra", 1)
        # it reconnects to a cloud that holds no reference for it (as after a restart)
        server.engine.references.forget("cam-a")
        e = EdgeStream(ch)
        e.hello("cam-a", TOKENS["cam-a"], codec.base_model_id, temporal_model_id=codec.temporal_model_id)
        await e.recv_kind("welcome")
        first = await e.recv_kind("intra_request")
        assert (first.reason, first.sequence) == (Reason.NO_REFERENCE, 0)
        for seq in (1, 2, 4, 6, 7):  # (1 again: a duplicate); frame 3 is lost on the way
            e.frame(seq, bases[seq - 1])
        msgs = await _messages(e, lambda m: len(_of(m, "ack")) == 4 and len(_of(m, "rejected")) == 1)
        assert [(a.sequence, a.duplicate) for a in _of(msgs, "ack")] == [
            (1, True),
            (2, False),
            (6, False),
            (7, False),
        ]
        assert [r.sequence for r in _of(msgs, "rejected")] == [4]
        assert not _of(msgs, "intra_request")  # asked already; its intra frame has not decoded yet
        e.close()
    await _decoded(server, "predicted", 2)
    assert server.engine.decoded_by_kind == {"intra": 2, "predicted": 2}  # 1, 6 and 2 (rebuilt), 7
    assert server.engine.references.rebuilt == 1
    assert dict(server.pipeline.stats.intra_requests) == {"NO_REFERENCE": 1}


async def test_an_unknown_temporal_model_is_refused_like_an_unknown_model(server, video):
    codec, _ = video
    async with operator_channel(server.target) as ch:
        e = EdgeStream(ch)
        e.hello("cam-a", TOKENS["cam-a"], codec.base_model_id, temporal_model_id="0123456789abcdef")
        with pytest.raises(aio.AioRpcError) as info:
            await e.recv()
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "temporal model 0123456789abcdef is not available" in info.value.details()
        # "" (intra frames only) is fine, and such a camera is not asked for intra frames
        e = EdgeStream(ch)
        e.hello("cam-b", TOKENS["cam-b"], codec.base_model_id)
        await e.recv_kind("welcome")
        e.frame(1, _intra(codec))
        ack = await e.recv_kind("ack")
        assert ack.sequence == 1
        e.close()


def _intra(codec) -> bytes:
    return codec.encode_batch([SyntheticCamera(1, 64, 64).frame(0).image], layers="base")[0].base


async def _stream_first_three(server, codec, bases) -> None:
    """cam-a streams its first three frames (intra, P, P) and sees them acked."""
    async with operator_channel(server.target) as ch:
        e = EdgeStream(ch)
        e.hello("cam-a", TOKENS["cam-a"], codec.base_model_id, temporal_model_id=codec.temporal_model_id)
        await e.recv_kind("welcome")
        for seq in (1, 2, 3):
            e.frame(seq, bases[seq - 1])
        await _messages(e, lambda m: len(_of(m, "ack")) == 3)
        e.close()


async def test_operators_see_stored_predicted_frames_through_their_chain(server, video):
    codec, bases = video
    await _stream_first_three(server, codec, bases)
    refs = server.engine.references
    deadline = asyncio.get_running_loop().time() + 30
    while server.engine.decoded_by_kind["predicted"] < 2 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    refs._cache.clear()  # as in a process that never decoded them (a restart, another replica)
    refs.forget("cam-a")
    png = await server.viewer.preview("cam-a", 3)
    assert refs.chain_frames_decoded == 3  # the intra frame 1, then 2 and 3 against it
    d1 = codec.decode_base(bases[0])
    d3 = codec.decode_base(bases[2], reference=codec.decode_base(bases[1], reference=d1))
    assert png.png == encode_png(codec.preview(d3)).png


async def test_after_a_restart_a_predicted_frame_binds_to_the_stored_frame_it_names(tmp_path, video):
    """A P-frame's header names its reference, not its size: a restarted cloud (no header held)
    takes the size from the stored frame the P-frame names, stores it with that size and decodes it
    through the stored chain."""
    codec, bases = video
    first = CloudServer(cloud_config(tmp_path), codec=codec)
    await first.start()
    try:
        await _stream_first_three(first, codec, bases)
    finally:
        await first.stop(5.0)
    again = CloudServer(cloud_config(tmp_path), codec=codec)
    await again.start()
    try:
        async with operator_channel(again.target) as ch:
            e = EdgeStream(ch)
            e.hello("cam-a", TOKENS["cam-a"], codec.base_model_id, temporal_model_id=codec.temporal_model_id)
            await e.recv_kind("welcome")
            assert (await e.recv_kind("intra_request")).reason == Reason.NO_REFERENCE
            e.frame(4, bases[3])  # sent before the camera acted on the request: predicted from 3
            e.frame(5, bases[4])
            msgs = await _messages(e, lambda m: len(_of(m, "ack")) == 2)
            assert not _of(msgs, "rejected")
            e.close()
        for seq in (4, 5):
            stored = await again.store.get_frame("cam-a", seq)
            assert (stored.width, stored.height, stored.model_id) == (96, 96, codec.base_model_id)
        deadline = asyncio.get_running_loop().time() + 30
        while again.engine.decoded_by_kind["predicted"] < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert again.engine.decoded_by_kind["predicted"] == 2 and again.engine.references.rebuilt == 1
    finally:
        await again.stop(5.0)


async def test_infer_takes_a_predicted_frame_only_of_a_camera_holding_its_reference(server, video):
    """Analytics.Infer of a P-frame: without the camera whose newest frame it names there is no
    size to give it (FAILED_PRECONDITION, the server keeps serving); with it, a result of the
    chain's size."""
    codec, bases = video
    async with operator_channel(server.target) as ch:
        e = EdgeStream(ch)
        e.hello("cam-a", TOKENS["cam-a"], codec.base_model_id, temporal_model_id=codec.temporal_model_id)
        await e.recv_kind("welcome")
        for seq in (1, 2):
            e.frame(seq, bases[seq - 1])
        await _messages(e, lambda m: len(_of(m, "ack")) == 2)
        await _decoded(server, "predicted", 1)
        infer = analytics_pb2_grpc.AnalyticsStub(ch).Infer
        for camera in ("", "cam-b"):
            with pytest.raises(aio.AioRpcError) as info:
                await infer(analytics_pb2.InferRequest(base=bases[2], camera_id=camera), timeout=30)
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "must send an intra frame" in info.value.details()
        res = (await infer(analytics_pb2.InferRequest(base=bases[2], camera_id="cam-a"), timeout=30)).result
        assert (res.width, res.height, res.base_bytes) == (96, 96, len(bases[2]))
        e.close()
