"""Every per-peer resource of the cloud is bounded: one client opening thousands of streams cannot
grow the cloud's memory without bound nor stop a camera from being served.

The flood test runs the cloud in its own process (tests.cloud.subprocess_server) so its resident
memory can be read, opens 2000 Subscribe streams and 2000 EdgeLink streams that never say Hello
from one client over 20 channels, and meanwhile a camera streams frames; it prints RSS before,
at the peak and after, and the frames acked. The unit tests check each bound's status.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from grpc import aio

from layercast.cloud.rpc.servicers.edge_link import check_hello_sizes
from layercast.cloud.sessions import CameraSession
from layercast.shared.errors import InvalidArgument
from layercast.shared.rpc import analytics_pb2, analytics_pb2_grpc, edge_pb2, edge_pb2_grpc
from tests.cloud.conftest import TOKENS, EdgeStream, cloud_config, operator_channel
from tests.cloud.subprocess_server import cloud_process

MiB = 1 << 20
FLOOD = 2000
CHANNELS = 20


DETAILS: dict[grpc.StatusCode, str] = {}


async def _hold(call: aio.Call) -> grpc.StatusCode:
    """Read a streaming call to its end; its status (one message per status kept in DETAILS)."""
    try:
        async for _ in call:
            pass
    except aio.AioRpcError as exc:
        DETAILS.setdefault(exc.code(), exc.details() or "")
        return exc.code()
    return grpc.StatusCode.OK


async def test_thousands_of_streams_from_one_client_keep_memory_bounded_and_cameras_served(
    tmp_path: Path, task_codec, frames
) -> None:
    with cloud_process(tmp_path) as cloud:
        async with aio.insecure_channel(cloud.target) as cam_ch:
            stream = EdgeStream(cam_ch)
            stream.hello("cam-a", TOKENS["cam-a"], task_codec.base_model_id, next_sequence=1)
            await stream.recv_kind("welcome")
            stream.frame(1, frames[0].base)
            assert (await stream.recv_kind("ack")).sequence == 1
            rss_before = cloud.rss_bytes()

            # One connection each (channels with the same arguments would share one connection).
            channels = [
                operator_channel(cloud.target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(CHANNELS)
            ]
            peak, acked, flood_calls = rss_before, [1], []
            try:
                t0 = time.perf_counter()
                for i in range(FLOOD):
                    ch = channels[i % CHANNELS]
                    flood_calls.append(
                        analytics_pb2_grpc.AnalyticsStub(ch).Subscribe(
                            analytics_pb2.SubscribeRequest(live_only=True)
                        )
                    )
                    idle: asyncio.Queue[edge_pb2.EdgeMessage] = asyncio.Queue()  # never sends a Hello

                    async def nothing(q: asyncio.Queue[edge_pb2.EdgeMessage] = idle):
                        yield await q.get()

                    flood_calls.append(edge_pb2_grpc.EdgeLinkStub(ch).Connect(nothing()))
                holders = [asyncio.create_task(_hold(c)) for c in flood_calls]
                # The camera keeps streaming meanwhile; every frame is acked.
                for seq in range(2, 42):
                    stream.frame(seq, frames[seq % len(frames)].base)
                    ack = await stream.recv_kind("ack", timeout=60)
                    acked.append(ack.sequence)
                    peak = max(peak, cloud.rss_bytes())
                    await asyncio.sleep(0.05)
                # The refused streams end at once, the Hello-less ones at the Hello timeout (3 s).
                settled, last = time.monotonic() + 60, -1
                while time.monotonic() < settled:
                    await asyncio.sleep(2.0)
                    peak = max(peak, cloud.rss_bytes())
                    count = sum(h.done() for h in holders)
                    if count == last:
                        break
                    last = count
                done = [h.result() for h in holders if h.done()]
                flood_s = time.perf_counter() - t0
                codes = {code: done.count(code) for code in set(done)}
                still_open = len(holders) - len(done)
                for c in flood_calls:
                    c.cancel()
                await asyncio.gather(*holders, return_exceptions=True)
            finally:
                for ch in channels:
                    await ch.close()
            await asyncio.sleep(1.0)
            rss_after = cloud.rss_bytes()
            stream.close()
    print(
        f"\n{FLOOD} Subscribe + {FLOOD} Hello-less EdgeLink streams from one client over {CHANNELS} "
        f"channels ({flood_s:.1f} s): cloud RSS {rss_before / MiB:.0f} MiB before, peak "
        f"{peak / MiB:.0f} MiB, {rss_after / MiB:.0f} MiB after; camera frames acked meanwhile: "
        f"{len(acked) - 1}/40; flood outcomes {dict((k.name, v) for k, v in codes.items())}, "
        f"{still_open} streams still open (accepted subscriptions); {DETAILS}"
    )
    assert acked == list(range(1, 42))
    assert codes.get(grpc.StatusCode.RESOURCE_EXHAUSTED, 0) >= FLOOD  # past the per-caller bounds
    assert codes.get(grpc.StatusCode.UNAUTHENTICATED, 0) >= 1  # Hello-less streams timed out
    assert still_open <= 256  # limits.max_calls_per_caller subscriptions at most
    assert peak - rss_before < 200 * MiB


def test_long_hello_strings_are_refused_before_they_are_stored() -> None:
    check_hello_sizes(edge_pb2.Hello(camera_id="c", base_model_id="ab" * 8), 128)
    for hello in (
        edge_pb2.Hello(camera_id="c", enhancement_model_id="x" * 129),
        edge_pb2.Hello(camera_id="c", software_version="v" * 1000),
        edge_pb2.Hello(camera_id="c", capabilities=["enhancement"] * 33),
        edge_pb2.Hello(camera_id="c", token="t" * 5000),
    ):
        with pytest.raises(InvalidArgument, match="Hello"):
            check_hello_sizes(hello, 128)


async def test_a_camera_that_stops_reading_has_its_stream_ended_not_its_queue_grown() -> None:
    session = CameraSession("c", edge_pb2.Hello(camera_id="c"), outgoing=asyncio.Queue(maxsize=4))
    sent = [session.send(edge_pb2.CloudMessage()) for _ in range(10)]
    assert sent == [True] * 4 + [False] * 6
    assert session.end_reason is not None and session.end_reason[0] == "RESOURCE_EXHAUSTED"
    assert "limits.camera_outgoing_queue" in session.end_reason[1]
    queued = [session.outgoing.get_nowait() for _ in range(session.outgoing.qsize())]
    assert len(queued) == 4 and queued[-1] is None  # the end marker always fits


async def test_subscribers_above_the_bound_get_resource_exhausted(tmp_path: Path, task_codec) -> None:
    from layercast.cloud.server import CloudServer

    server = CloudServer(cloud_config(tmp_path, **{"limits.max_subscribers": 3}), codec=task_codec)
    await server.start()
    try:
        async with operator_channel(server.target) as ch:
            stub = analytics_pb2_grpc.AnalyticsStub(ch)
            calls = [stub.Subscribe(analytics_pb2.SubscribeRequest(live_only=True)) for _ in range(5)]
            holders = [asyncio.create_task(_hold(c)) for c in calls]
            await asyncio.sleep(1.0)
            done = [h.result() for h in holders if h.done()]
            assert done == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
            assert server.call_limits.subscribers.held == 3
            for c in calls:
                c.cancel()
            await asyncio.gather(*holders, return_exceptions=True)
            await asyncio.sleep(0.2)
            assert server.call_limits.subscribers.held == 0  # given back when they end
            with pytest.raises(aio.AioRpcError) as info:
                await stub.Infer(analytics_pb2.InferRequest(camera_id="c" * 200), timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await server.stop(5.0)
