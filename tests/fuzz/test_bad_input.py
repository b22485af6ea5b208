"""Targeted bad input against a real server: malicious sizes, the wrong model, replayed and
out-of-order sequence numbers, oversize messages, oversize subscription filters; and regressions
of what the fuzz tests found (requests that do not parse, uint64 sequences above int64, error
messages quoting huge fields, health checks of unknown services).

Out-of-order frames, the behaviour pinned here: sequence numbers must increase per camera. A frame
older than the newest stored one is refused with OUT_OF_RANGE (it is never stored, and the edge must
not resend it), unless it is stored already, then it is acknowledged as a duplicate; gaps are fine.
Results follow in sequence order.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2

from layercast.cloud.rpc.servicers.analytics import MAX_SUBSCRIBE_CAMERAS
from layercast.shared.codec import bitstream
from layercast.shared.rpc import analytics_pb2, analytics_pb2_grpc, edge_pb2, operator_pb2, operator_pb2_grpc
from tests.fuzz.clients import (
    CONNECT,
    ENHANCE,
    GET_PREVIEW,
    HEALTH_CHECK,
    LIST_FRAMES,
    SUBSCRIBE,
    Camera,
    assert_still_serving,
    cloud_messages,
    code_number,
    frame,
    hello,
)
from tests.fuzz.harness import LIMITS, MAX_MESSAGE, FuzzServer, bidi, rss_mb, server_stream, unary
from tests.fuzz.strategies import Samples, claim_size, png_claiming

S = grpc.StatusCode
MAX_FRAME = LIMITS["limits.max_frame_bytes"]


async def answer(cam: Camera) -> edge_pb2.CloudMessage:
    return await asyncio.wait_for(cam.acks.get(), 30)


def acked(msg: edge_pb2.CloudMessage, seq: int, *, duplicate: bool = False) -> bool:
    return msg.WhichOneof("kind") == "ack" and msg.ack.sequence == seq and msg.ack.duplicate == duplicate


def refused(msg: edge_pb2.CloudMessage, seq: int, code: grpc.StatusCode) -> bool:
    return (
        msg.WhichOneof("kind") == "rejected"
        and msg.rejected.sequence == seq
        and msg.rejected.code == code_number(code)
        and bool(msg.rejected.message)
    )


async def results(channel: aio.Channel, camera: str, after: int, n: int) -> list[int]:
    """The sequences of the next ``n`` results of ``camera`` after ``after``."""
    call = analytics_pb2_grpc.AnalyticsStub(channel).Subscribe(
        analytics_pb2.SubscribeRequest(camera_ids=[camera], resume_after={camera: after}), timeout=60
    )
    out = []
    async for event in call:
        out.append(event.result.sequence)
        if len(out) == n:
            break
    call.cancel()
    return out


def test_headers_claiming_huge_images_are_refused_fast_and_allocate_nothing(
    fuzz_server: FuzzServer, samples: Samples
) -> None:
    """A bitstream header claiming 65535x65535 (the most its 16-bit fields can state) and a PNG
    claiming 100000x100000 are refused from the header, in milliseconds, with memory unchanged."""
    huge_base = claim_size(samples.bases[0], 65535, 65535)
    huge_png = png_claiming(100_000, 100_000)
    rounds = 100

    async def run() -> dict[str, float]:
        ch = fuzz_server.channel
        infer = analytics_pb2_grpc.AnalyticsStub(ch).Infer
        cam = Camera(ch, "fz-1", samples.model_id)
        seq = (await asyncio.wait_for(cam.welcome, 30)).last_acked_sequence + 1
        cam.send(frame(seq, samples.bases[0]))  # warm every path once before measuring
        assert acked(await answer(cam), seq)
        await infer(analytics_pb2.InferRequest(base=samples.bases[0]), timeout=30)
        rss0, t0 = rss_mb(trimmed=True), time.perf_counter()
        for _ in range(rounds):
            cam.send(frame(seq + 1, huge_base))
            msg = await answer(cam)
            assert refused(msg, seq + 1, S.RESOURCE_EXHAUSTED) and "65535x65535" in msg.rejected.message, msg
        t1 = time.perf_counter()
        cam.send(
            frame(seq + 1, samples.bases[1])
        )  # the refused frames took nothing: the sequence is still free
        assert acked(await answer(cam), seq + 1)
        assert await cam.close() == S.OK
        for req, needle in (
            (analytics_pb2.InferRequest(base=huge_base), "65535x65535"),
            (analytics_pb2.InferRequest(image=huge_png), "10000000000 pixels"),
        ):
            for _ in range(rounds):
                with pytest.raises(aio.AioRpcError) as info:
                    await infer(req, timeout=30)
                assert info.value.code() == S.RESOURCE_EXHAUSTED and needle in info.value.details(), (
                    info.value
                )
        t2 = time.perf_counter()
        return {
            "frame_refusal_ms": 1000 * (t1 - t0) / rounds,
            "infer_refusal_ms": 1000 * (t2 - t1) / (2 * rounds),
            "rss_before_mb": rss0,
            "rss_after_mb": rss_mb(trimmed=True),
        }

    figures = fuzz_server.run(run(), timeout=120)
    print(f"\nHUGE HEADERS { ({k: round(v, 2) for k, v in figures.items()}) }")
    assert figures["frame_refusal_ms"] < 100 and figures["infer_refusal_ms"] < 100, figures
    assert figures["rss_after_mb"] - figures["rss_before_mb"] < 20, figures  # 65535² RGB would be 12 GiB


def test_the_wrong_model_id_is_refused_naming_it(fuzz_server: FuzzServer, samples: Samples) -> None:
    foreign_id = bitstream.parse_header(samples.foreign_base).model_id

    async def run() -> None:
        ch = fuzz_server.channel
        # a Hello for a model this cloud lacks: FAILED_PRECONDITION naming both ids
        call = ch.stream_stream(CONNECT)(iter([hello("fz-2", foreign_id)]), timeout=30)
        with pytest.raises(aio.AioRpcError) as info:
            async for _ in call:
                pass
        assert info.value.code() == S.FAILED_PRECONDITION
        assert foreign_id in info.value.details() and samples.model_id in info.value.details()
        # a frame of another model on a good stream: refused alone, naming the model; the stream goes on
        cam = Camera(ch, "fz-2", samples.model_id)
        seq = (await asyncio.wait_for(cam.welcome, 30)).last_acked_sequence + 1
        cam.send(frame(seq, samples.foreign_base))
        msg = await answer(cam)
        assert refused(msg, seq, S.FAILED_PRECONDITION) and foreign_id in msg.rejected.message, msg
        cam.send(frame(seq, samples.bases[2]))
        assert acked(await answer(cam), seq)
        assert await cam.close() == S.OK
        # and unary inference of it
        with pytest.raises(aio.AioRpcError) as info:
            await analytics_pb2_grpc.AnalyticsStub(ch).Infer(
                analytics_pb2.InferRequest(base=samples.foreign_base), timeout=30
            )
        assert info.value.code() == S.FAILED_PRECONDITION and foreign_id in info.value.details()

    fuzz_server.run(run(), timeout=120)


def test_a_replayed_sequence_is_acknowledged_as_duplicate_and_inferred_once(
    fuzz_server: FuzzServer, samples: Samples, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[tuple[str, int]] = []
    hub = fuzz_server.server.hub
    original = hub.publish

    def record(result: object) -> None:
        published.append((result.camera_id, result.sequence))  # type: ignore[attr-defined]
        original(result)  # type: ignore[arg-type]

    monkeypatch.setattr(hub, "publish", record)

    async def run() -> int:
        ch = fuzz_server.channel
        cam = Camera(ch, "fz-3", samples.model_id)
        n = (await asyncio.wait_for(cam.welcome, 30)).last_acked_sequence + 1
        cam.send(frame(n, samples.bases[0]))
        assert acked(await answer(cam), n)
        cam.send(frame(n, samples.bases[0]))  # the same frame again
        assert acked(await answer(cam), n, duplicate=True)
        cam.send(frame(n, samples.bases[4]))  # the same number with other content: the stored frame stands
        assert acked(await answer(cam), n, duplicate=True)
        assert await cam.close() == S.OK
        again = Camera(ch, "fz-3", samples.model_id)  # a reconnect resends what it was not sure of
        assert (await asyncio.wait_for(again.welcome, 30)).last_acked_sequence == n
        again.send(frame(n, samples.bases[0], resent=True))
        assert acked(await answer(again), n, duplicate=True)
        again.send(frame(n + 1, samples.bases[1]))
        assert acked(await answer(again), n + 1)
        assert await again.close() == S.OK
        # per camera results come in sequence order: once n + 1 is out, any second result of n would be too
        assert await asyncio.wait_for(results(ch, "fz-3", n - 1, 2), 60) == [n, n + 1]
        frames = await operator_pb2_grpc.OperatorStub(ch).ListFrames(
            operator_pb2.ListFramesRequest(camera_id="fz-3", before_sequence=n + 2, limit=2), timeout=30
        )
        assert [f.sequence for f in frames.frames] == [n + 1, n]
        assert (
            frames.frames[1].base_bytes == len(samples.bases[0]) != len(samples.bases[4])
        )  # the first copy stays
        return n

    n = fuzz_server.run(run(), timeout=120)
    assert [p for p in published if p[0] == "fz-3"] == [("fz-3", n), ("fz-3", n + 1)]  # each inferred once


def test_out_of_order_frames_older_than_the_newest_are_refused(
    fuzz_server: FuzzServer, samples: Samples
) -> None:
    async def run() -> None:
        ch = fuzz_server.channel
        cam = Camera(ch, "fz-4", samples.model_id)
        b = (await asyncio.wait_for(cam.welcome, 30)).last_acked_sequence
        steps = [
            (b + 2, "new"),
            (b + 1, S.OUT_OF_RANGE),  # older than the newest stored, never stored
            (b + 5, "new"),  # a gap is fine
            (b + 3, S.OUT_OF_RANGE),
            (b + 2, "duplicate"),  # older, but stored: a resend
            (b + 6, "new"),
        ]
        for seq, want in steps:
            cam.send(frame(seq, samples.bases[seq % 8]))
            msg = await answer(cam)
            if want == "new":
                assert acked(msg, seq), (seq, msg)
            elif want == "duplicate":
                assert acked(msg, seq, duplicate=True), (seq, msg)
            else:
                assert refused(msg, seq, want) and "not after the newest" in msg.rejected.message, (seq, msg)
        assert await cam.close() == S.OK
        assert await asyncio.wait_for(results(ch, "fz-4", b, 3), 60) == [b + 2, b + 5, b + 6]

    fuzz_server.run(run(), timeout=120)


def test_oversize_messages_are_refused_and_the_server_goes_on(
    fuzz_server: FuzzServer, samples: Samples
) -> None:
    # a frame above max_frame_bytes inside a message: that frame alone is refused
    async def big_frame() -> None:
        cam = Camera(fuzz_server.channel, "fz-5", samples.model_id)
        seq = (await asyncio.wait_for(cam.welcome, 30)).last_acked_sequence + 1
        cam.send(frame(seq, samples.bases[0] + bytes(MAX_FRAME)))
        assert refused(await answer(cam), seq, S.RESOURCE_EXHAUSTED)
        cam.send(frame(seq, samples.bases[0]))
        assert acked(await answer(cam), seq)
        assert await cam.close() == S.OK

    fuzz_server.run(big_frame(), timeout=60)
    # a message above max_message_bytes ends the stream with RESOURCE_EXHAUSTED
    out = bidi(
        fuzz_server.sync_channel,
        CONNECT,
        [hello("fz-5", samples.model_id), frame(10**6, bytes(MAX_MESSAGE + 1))],
        timeout=30,
    )
    assert out.code == S.RESOURCE_EXHAUSTED and str(MAX_MESSAGE) in out.details, out
    assert all(m.WhichOneof("kind") in ("welcome", "credits") for m in cloud_messages(out.responses))

    async def unary_and_stream() -> None:
        infer = analytics_pb2_grpc.AnalyticsStub(fuzz_server.channel).Infer
        with pytest.raises(aio.AioRpcError) as info:
            await infer(analytics_pb2.InferRequest(image=b"\x89PNG" + bytes(MAX_MESSAGE)), timeout=30)
        assert info.value.code() == S.RESOURCE_EXHAUSTED
        req = analytics_pb2.SubscribeRequest(camera_ids=["x" * 1000] * (MAX_MESSAGE // 1000 + 1))
        out = await server_stream(
            fuzz_server.channel, SUBSCRIBE, req.SerializeToString(), expect=0, quiet_s=5
        )
        assert out.code == S.RESOURCE_EXHAUSTED, out

    fuzz_server.run(unary_and_stream(), timeout=60)
    assert_still_serving(fuzz_server, samples)


def test_a_subscription_naming_too_many_cameras_is_refused(fuzz_server: FuzzServer) -> None:
    """Bounded before the store query is built (SQLite has a fixed parameter limit per statement)."""
    n = MAX_SUBSCRIBE_CAMERAS + 1
    for req in (
        analytics_pb2.SubscribeRequest(camera_ids=[f"c{i}" for i in range(n)]),
        analytics_pb2.SubscribeRequest(resume_after={f"c{i}": 1 for i in range(n)}),
    ):
        assert len(req.SerializeToString()) < MAX_MESSAGE
        out = fuzz_server.run(
            server_stream(fuzz_server.channel, SUBSCRIBE, req.SerializeToString(), expect=0, quiet_s=5)
        )
        assert out.code == S.INVALID_ARGUMENT and str(MAX_SUBSCRIBE_CAMERAS) in out.details, out


# -- regressions of what the fuzzing found ---------------------------------------------------------


def test_requests_that_do_not_parse_get_invalid_argument_naming_their_type(
    fuzz_server: FuzzServer, samples: Samples
) -> None:
    """grpc itself answers UNKNOWN with a Python exception repr when a request does not parse."""
    out = fuzz_server.run(unary(fuzz_server.channel, GET_PREVIEW, b"\x0a\x02\xff\xfe"))  # bad UTF-8
    assert out.code == S.INVALID_ARGUMENT and "layercast.v1.FrameRef" in out.details, out
    out = fuzz_server.run(unary(fuzz_server.channel, HEALTH_CHECK, b"\xff\xff\xff"))
    assert out.code == S.INVALID_ARGUMENT and "HealthCheckRequest" in out.details, out
    # mid-stream: a damaged message after a good Hello ends the stream with the same status
    out = bidi(
        fuzz_server.sync_channel, CONNECT, [hello("fz-5", samples.model_id), b"\x12\xff\xff"], timeout=30
    )
    assert out.code == S.INVALID_ARGUMENT and "layercast.v1.EdgeMessage" in out.details, out


def test_sequences_above_int64_are_answered_like_any_other(fuzz_server: FuzzServer) -> None:
    """uint64 fields reached SQLite (int64) and failed with OverflowError → UNKNOWN."""
    huge = (1 << 64) - 1
    ref = operator_pb2.FrameRef(camera_id="fz-0", sequence=huge)
    out = fuzz_server.run(unary(fuzz_server.channel, GET_PREVIEW, ref.SerializeToString()))
    assert out.code == S.NOT_FOUND, out
    req = operator_pb2.EnhanceRequest(frame=ref)
    assert fuzz_server.run(unary(fuzz_server.channel, ENHANCE, req.SerializeToString())).code == S.NOT_FOUND
    frames = operator_pb2.ListFramesRequest(camera_id="fz-0", before_sequence=huge)
    assert fuzz_server.run(unary(fuzz_server.channel, LIST_FRAMES, frames.SerializeToString())).code == S.OK
    sub = analytics_pb2.SubscribeRequest(from_sequence=huge, resume_after={"fz-0": huge})
    out = fuzz_server.run(
        server_stream(fuzz_server.channel, SUBSCRIBE, sub.SerializeToString(), expect=0, quiet_s=0.3)
    )
    assert out.code is None and not out.responses, out  # open, nothing to replay


def test_errors_quoting_huge_fields_keep_their_status(fuzz_server: FuzzServer, samples: Samples) -> None:
    """A 5,000-character camera id quoted in an error made the status trailer exceed the client's
    8 KiB metadata limit: the client saw RESOURCE_EXHAUSTED "Stream removed" instead."""
    ref = operator_pb2.FrameRef(camera_id="é" * 5000, sequence=1)
    out = fuzz_server.run(unary(fuzz_server.channel, GET_PREVIEW, ref.SerializeToString()))
    assert out.code == S.NOT_FOUND and len(out.details.encode()) <= 1024 and out.details.endswith("…"), out
    # The right camera and token: an unknown model id is FAILED_PRECONDITION; one longer than
    # limits.max_id_length is refused before anything looks at it (INVALID_ARGUMENT).
    out = bidi(fuzz_server.sync_channel, CONNECT, [hello("fz-5", "f" * 128)], timeout=30)
    assert out.code == S.FAILED_PRECONDITION and len(out.details.encode()) <= 1024, out
    out = bidi(fuzz_server.sync_channel, CONNECT, [hello("fz-5", "f" * 20_000)], timeout=30)
    assert out.code == S.INVALID_ARGUMENT and "limits.max_id_length" in out.details, out
    assert len(out.details.encode()) <= 1024, out


def test_health_names_an_unknown_service(fuzz_server: FuzzServer) -> None:
    req = health_pb2.HealthCheckRequest(service="no.such.Service")
    out = fuzz_server.run(unary(fuzz_server.channel, HEALTH_CHECK, req.SerializeToString()))
    assert (
        out.code == S.NOT_FOUND
        and "no.such.Service" in out.details
        and "layercast.v1.EdgeLink" in out.details
    )
