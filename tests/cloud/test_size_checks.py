"""Image sizes are checked from headers before anything large is allocated, on every path into the
cloud: EdgeLink frames, Analytics.Infer with a base bitstream or with a PNG/JPEG (decompression
bombs), enhancement layers sent back by a camera, and frames recovered from the store after the
limit was lowered. Message sizes are set on the server and on every client."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import struct
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from grpc import aio
from PIL import Image

from layercast.cloud.ingest.engine import InferenceEngine
from layercast.cloud.ingest.pipeline import FramePipeline
from layercast.cloud.results.sqlite import SqliteStore
from layercast.cloud.results.store import AsyncStore
from layercast.cloud.server import server_options
from layercast.cloud.sessions import SessionRegistry
from layercast.cloud.web import client as web_client
from layercast.commands import cloud as cloud_cli
from layercast.shared.codec import bitstream
from layercast.shared.rpc import analytics_pb2, analytics_pb2_grpc, edge_pb2, operator_pb2, operator_pb2_grpc
from tests.cloud.conftest import TOKENS, EdgeStream, cloud_config, operator_channel, stored_frame


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def claiming(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a layercast bitstream) re-packed with a header claiming ``width``x``height``, CRC valid."""
    header = bitstream.parse_header(data)
    return bitstream.pack(dataclasses.replace(header, width=width, height=height), bitstream.payload(data))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims ``width``x``height`` RGB pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 16x16 baseline JPEG with its SOF0 header patched to claim ``width``x``height``."""
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def image_bytes(fmt: str, size: tuple[int, int] = (24, 16)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


async def test_headers_claiming_huge_images_are_refused_on_every_path_without_allocating(
    cloud, task_codec, frames
):
    huge_base = claiming(frames[0].base, 65535, 65535)  # the most a 16-bit header field can state
    rounds = 30
    async with operator_channel(cloud.target) as ch:
        infer = analytics_pb2_grpc.AnalyticsStub(ch).Infer
        e = EdgeStream(ch)
        e.hello(
            "cam-a", TOKENS["cam-a"], task_codec.base_model_id, next_sequence=1, capabilities=["enhancement"]
        )
        await e.recv_kind("welcome")
        e.frame(1, frames[1].base)  # warm every path once before measuring
        await e.recv_kind("ack")
        await infer(analytics_pb2.InferRequest(base=frames[0].base), timeout=30)
        await infer(analytics_pb2.InferRequest(image=image_bytes("PNG")), timeout=30)

        rss0, t0 = rss_mb(), time.perf_counter()
        for _ in range(rounds):  # EdgeLink ingest
            e.frame(2, huge_base)
            rej = await e.recv_kind("rejected")
            assert rej.sequence == 2 and rej.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            assert "65535x65535" in rej.message
        cases = [
            (analytics_pb2.InferRequest(base=huge_base), "65535x65535"),
            (analytics_pb2.InferRequest(image=png_claiming(100_000, 100_000)), "10000000000 pixels"),
            (analytics_pb2.InferRequest(image=jpeg_claiming(60_000, 60_000)), "3600000000 pixels"),
            # Above the configured limit but below Pillow's own bomb limit: our check, from the header.
            (analytics_pb2.InferRequest(image=png_claiming(5000, 5000)), "5000x5000"),
        ]
        for request, needle in cases:
            for _ in range(rounds):
                with pytest.raises(aio.AioRpcError) as info:
                    await infer(request, timeout=10)
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value
                assert needle in info.value.details() and "limit" in info.value.details(), info.value
        elapsed = time.perf_counter() - t0
        growth = rss_mb() - rss0

        # A camera answering an enhancement request with a layer claiming a huge image.
        op = operator_pb2_grpc.OperatorStub(ch)
        call = asyncio.ensure_future(
            op.Enhance(
                operator_pb2.EnhanceRequest(frame=operator_pb2.FrameRef(camera_id="cam-a", sequence=1)),
                timeout=30,
            )
        )
        req = await e.recv_kind("enhancement_request")
        e.send(
            enhancement=edge_pb2.EnhancementResponse(
                request_id=req.request_id,
                sequence=1,
                enhancement=claiming(frames[1].enhancement, 65535, 65535),
            )
        )
        with pytest.raises(aio.AioRpcError) as info:
            await call
        assert (
            info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "65535x65535" in info.value.details()
        )

        # Formats other than PNG and JPEG are not parsed at all; and the server still serves.
        for fmt in ("BMP", "GIF", "TIFF"):
            with pytest.raises(aio.AioRpcError) as info:
                await infer(analytics_pb2.InferRequest(image=image_bytes(fmt)), timeout=10)
            assert (
                info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                and "PNG or JPEG" in info.value.details()
            )
        ok = await infer(analytics_pb2.InferRequest(image=image_bytes("JPEG")), timeout=30)
        assert (ok.result.width, ok.result.height) == (24, 16)
        e.close()

    per_call_ms = 1000 * elapsed / (rounds * (1 + len(cases)))
    print(f"\nHUGE HEADERS: {per_call_ms:.2f} ms per refusal, RSS {rss0:.1f} -> {rss0 + growth:.1f} MiB")
    assert per_call_ms < 50, per_call_ms
    assert growth < 8, growth  # one 65535² RGB image would be 12 GiB; a 100000² PNG 28 GiB


async def test_frames_recovered_after_the_limit_was_lowered_are_refused_before_decoding(
    tmp_path, task_codec, frames
):
    db = SqliteStore(tmp_path / "cloud.db")  # stored under a larger limit, no result yet
    small = claiming(frames[3].base, 32, 32)  # decodes or not, it must get past the size check
    for seq, data in ((1, frames[1].base), (2, small), (3, frames[2].base)):
        db.put_frame(stored_frame("cam-a", seq, data))
    store = AsyncStore(db)
    decoded: list[tuple[int, int]] = []
    real_decode = task_codec.decode_base_batch

    def spy(items, return_exceptions=False, references=None):
        decoded.extend((b.header.width, b.header.height) for b in items)
        return real_decode(items, return_exceptions, references)

    engine = InferenceEngine(task_codec, max_pixels=64 * 64 - 1)  # the frames are 64x64
    published: list = []
    pipeline = FramePipeline(
        store=store,
        engine=engine,
        hub=SimpleNamespace(publish=published.append),
        registry=SessionRegistry(),
        deliver=lambda session, event: None,
        max_batch_size=4,
        max_queue_delay_s=0.0,
        workers=1,
        queue_capacity=8,
    )
    task_codec.decode_base_batch = spy
    try:
        assert await pipeline.recover() == 1
        assert await pipeline.batcher.close(timeout=60)
    finally:
        del task_codec.decode_base_batch
    assert decoded == [(32, 32)]
    assert pipeline.stats.rejected_by_code[grpc.StatusCode.RESOURCE_EXHAUSTED] == 2
    status = {f.sequence: f.status for f in await store.list_frames("cam-a")}
    assert 1 not in status and 3 not in status  # rejected frames are not listed
    assert await store.pending_frames() == []
    await store.close()


def test_message_sizes_are_set_on_the_server_and_every_client(tmp_path):
    cfg = cloud_config(tmp_path, **{"limits.max_message_bytes": 1 << 20, "limits.max_frame_bytes": 512 << 10})
    opts = dict(server_options(cfg))
    assert opts["grpc.max_receive_message_length"] == opts["grpc.max_send_message_length"] == 1 << 20
    cli_opts = dict(cloud_cli.CLIENT_OPTIONS)
    assert cli_opts["grpc.max_receive_message_length"] >= 16 << 20  # a large reconstruction PNG
    assert cli_opts["grpc.max_send_message_length"] == 1 << 20
    assert web_client.MAX_SEND_BYTES == 1 << 20 and web_client.MAX_MESSAGE_BYTES >= 16 << 20
