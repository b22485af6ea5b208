"""The cloud's Prometheus metrics move with real frames through a real CloudServer, and its
/metrics endpoint serves them over HTTP."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest
from grpc import aio

from layercast.cloud.server import CloudServer
from layercast.shared.errors import ConfigError
from layercast.shared.rpc import edge_pb2, operator_pb2, operator_pb2_grpc
from tests.cloud.conftest import TOKENS, EdgeStream, cloud_config, operator_channel
from tests.deploy.promtools import http_get, scrape

CAM = "cam-a"


async def eventually(cond, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def connect(ch: aio.Channel, codec, cam: str = CAM) -> EdgeStream:
    e = EdgeStream(ch)
    e.hello(cam, TOKENS[cam], codec.base_model_id, next_sequence=1, capabilities=["enhancement"])
    await e.recv_kind("welcome")
    return e


@pytest.fixture
async def server(tmp_path, task_codec):
    srv = CloudServer(cloud_config(tmp_path, metrics_port=0, enhancement_timeout_s=0.5), codec=task_codec)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(5)


def sample(srv: CloudServer, name: str, **labels: str) -> float | None:
    return srv.metrics.registry.get_sample_value(name, labels)


async def test_frames_results_batches_and_streams_are_counted(server, task_codec, frames):
    n = 5
    assert server.metrics_server is not None and server.metrics_server.port > 0
    url = server.metrics_server.url
    first = await scrape(url)
    assert first.value("layercast_cloud_ready") == 1
    (info,) = first.labels_of("layercast_build_info")
    assert info["base_model_id"] == task_codec.base_model_id
    assert info["enhancement_model_id"] == task_codec.enhancement_model_id
    assert first.value("layercast_cloud_active_streams") == 0

    async with operator_channel(server.target) as ch:
        e = await connect(ch, task_codec)
        for seq in range(1, n + 1):
            e.frame(seq, frames[seq].base)
        for _ in range(n):
            await e.recv_kind("ack")
        e.frame(3, frames[3].base, resent=True)  # the edge resends one: duplicate
        assert (await e.recv_kind("ack")).duplicate
        e.frame(n + 1, b"definitely not a bitstream")
        rejected = await e.recv_kind("rejected")
        code = next(c.name for c in grpc.StatusCode if c.value[0] == rejected.code)
        await eventually(lambda: server.pipeline.stats.results == n, what="results")

        assert sample(server, "layercast_cloud_frames_total", camera=CAM, outcome="stored") == n
        assert sample(server, "layercast_cloud_frames_total", camera=CAM, outcome="duplicate") == 1
        assert sample(server, "layercast_cloud_frames_total", camera=CAM, outcome="rejected") == 1
        assert sample(server, "layercast_cloud_frame_errors_total", code=code) == 1
        assert sample(server, "layercast_cloud_results_total", camera=CAM) == n
        base_bytes = sum(len(frames[s].base) for s in range(1, n + 1))
        assert sample(server, "layercast_cloud_base_processed_bytes_total", camera=CAM) == base_bytes
        assert sample(server, "layercast_cloud_frame_bpp_count") == n
        assert sample(server, "layercast_cloud_frame_bpp_sum") == pytest.approx(8.0 * base_bytes / (64 * 64))
        assert sample(server, "layercast_cloud_end_to_end_seconds_count", camera=CAM) == n
        # Triton's three figures, separately: batch sizes, per-frame queue delay, per-batch compute.
        batches = list(server.pipeline.batcher.history)
        assert sample(server, "layercast_cloud_batch_size_count") == len(batches)
        assert sample(server, "layercast_cloud_batch_size_sum") == n
        assert sample(server, "layercast_cloud_queue_delay_seconds_count") == n
        assert sample(server, "layercast_cloud_queue_delay_seconds_sum") == pytest.approx(
            sum(sum(b.queue_delays_s) for b in batches)
        )
        assert sample(server, "layercast_cloud_inference_seconds_count") == len(batches)
        assert sample(server, "layercast_cloud_inference_seconds_sum") == pytest.approx(
            sum(b.compute_s for b in batches)
        )
        assert sample(server, "layercast_cloud_active_streams") == 1
        assert sample(server, "layercast_cloud_camera_connected", camera=CAM) == 1
        assert sample(server, "layercast_cloud_stream_connects_total", camera=CAM) == 1

        # The same figures over HTTP, as Prometheus reads them.
        got = await scrape(url)
        assert got.content_type.startswith("text/plain")
        assert got.value("layercast_cloud_frames_total", camera=CAM, outcome="stored") == n
        assert got.total("layercast_cloud_frames_total") == n + 2
        assert got.value("layercast_cloud_results_total", camera=CAM) == n
        assert got.value("layercast_cloud_batch_size_sum") == n

        e.send(heartbeat=edge_pb2.Heartbeat(queued_frames=7, dropped_frames=3))
        await eventually(lambda: sample(server, "layercast_cloud_edge_dropped_frames", camera=CAM) == 3)
        assert sample(server, "layercast_cloud_edge_outbox_frames", camera=CAM) == 7

        e.close()
        await eventually(lambda: not server.registry.is_online(CAM), what="disconnect")
        assert sample(server, "layercast_cloud_active_streams") == 0
        assert sample(server, "layercast_cloud_camera_connected", camera=CAM) == 0

        e2 = await connect(ch, task_codec)  # a reconnect shows in stream_connects
        assert sample(server, "layercast_cloud_stream_connects_total", camera=CAM) == 2
        e2.close()


async def test_enhancement_requests_latency_bytes_and_failures_by_reason(server, task_codec, frames):
    async with operator_channel(server.target) as ch:
        op = operator_pb2_grpc.OperatorStub(ch)
        e = await connect(ch, task_codec)
        for seq in (1, 2):
            e.frame(seq, frames[seq].base)
        for _ in range(2):
            await e.recv_kind("ack")

        def enhance(seq: int):
            ref = operator_pb2.FrameRef(camera_id=CAM, sequence=seq)
            return asyncio.ensure_future(op.Enhance(operator_pb2.EnhanceRequest(frame=ref), timeout=20))

        call = enhance(1)  # answered with the real layer
        req = await e.recv_kind("enhancement_request")
        e.send(
            enhancement=edge_pb2.EnhancementResponse(
                request_id=req.request_id, sequence=1, enhancement=frames[1].enhancement
            )
        )
        resp = await call
        call = enhance(2)  # past the edge's retention
        req = await e.recv_kind("enhancement_request")
        e.send(
            enhancement=edge_pb2.EnhancementResponse(
                request_id=req.request_id,
                sequence=2,
                unavailable=edge_pb2.EnhancementUnavailable(reason=edge_pb2.EnhancementUnavailable.EXPIRED),
            )
        )
        with pytest.raises(aio.AioRpcError):
            await call
        with pytest.raises(aio.AioRpcError) as timed_out:  # no answer within 0.5 s
            await enhance(2)
        assert timed_out.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        e.close()
        await eventually(lambda: not server.registry.is_online(CAM), what="disconnect")
        with pytest.raises(aio.AioRpcError) as offline:
            await enhance(2)
        assert offline.value.code() == grpc.StatusCode.UNAVAILABLE

    assert sample(server, "layercast_cloud_enhancement_requests_total") == 4
    assert sample(server, "layercast_cloud_enhancement_seconds_count") == 1
    assert 0 < sample(server, "layercast_cloud_enhancement_seconds_sum") <= resp.fetch_seconds + 0.5
    assert sample(server, "layercast_cloud_enhancement_received_bytes_total") == len(frames[1].enhancement)
    failures = {
        r: sample(server, "layercast_cloud_enhancement_failures_total", reason=r)
        for r in ("expired", "timeout", "camera_offline", "not_found", "store_error")
    }
    assert failures == {"expired": 1, "timeout": 1, "camera_offline": 1, "not_found": 0, "store_error": 0}
    assert sample(server, "layercast_cloud_enhancement_pending") == 0


async def test_subscribers_and_their_lag(server, task_codec, frames):
    hub = server.hub
    patient = hub.follow(live_only=True, queue_size=10)
    slow = hub.follow(live_only=True, queue_size=1)
    first_a = asyncio.ensure_future(anext(patient))
    first_b = asyncio.ensure_future(anext(slow))
    await eventually(lambda: hub.subscriber_count == 2, what="two subscribers")
    assert sample(server, "layercast_cloud_subscribers") == 2
    async with operator_channel(server.target) as ch:
        e = await connect(ch, task_codec)
        for seq in range(1, 6):
            e.frame(seq, frames[seq].base)
        await first_a, await first_b  # each takes one result, then stops reading
        await eventually(lambda: server.pipeline.stats.results == 5, what="results")
        e.close()
    # The slow one (queue of 1) was cut off; the patient one has the 4 other results queued.
    assert sample(server, "layercast_cloud_subscribers_lagged_total") == 1
    assert sample(server, "layercast_cloud_subscribers") == 1
    assert sample(server, "layercast_cloud_subscriber_lag_max") == 4
    await patient.aclose()
    await slow.aclose()
    assert sample(server, "layercast_cloud_subscribers") == 0


async def test_metrics_endpoint_http_behaviour(server, tmp_path, task_codec):
    base = server.metrics_server.url.removesuffix("/metrics")
    status, headers, body = await asyncio.to_thread(
        http_get, base + "/metrics", accept="application/openmetrics-text; version=1.0.0"
    )
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF") and b"layercast_cloud_ready 1.0" in body
    status, headers, body = await asyncio.to_thread(http_get, base + "/metrics", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 1000
    assert (await asyncio.to_thread(http_get, base + "/nope"))[0] == 404
    assert (await asyncio.to_thread(http_get, base + "/metrics", method="POST"))[0] == 405
    assert (await asyncio.to_thread(http_get, base + "/healthz"))[:3:2] == (200, b"ok\n")

    def garbage() -> bytes:
        with socket.create_connection(("127.0.0.1", server.metrics_server.port), timeout=5) as s:
            s.sendall(b"hello there\r\n\r\n")
            return s.recv(1000)

    assert (await asyncio.to_thread(garbage)).startswith(b"HTTP/1.1 400")

    # A second server asking for the same metrics port fails to start with a clear error.
    port = server.metrics_server.port
    other = CloudServer(cloud_config(tmp_path / "other", metrics_port=port), codec=task_codec)
    with pytest.raises(ConfigError, match="cannot serve metrics"):
        await other.start()


@pytest.mark.parametrize("port", [None, -1])
async def test_metrics_off(tmp_path, task_codec, port):
    srv = CloudServer(cloud_config(tmp_path, metrics_port=port), codec=task_codec)
    await srv.start()
    try:
        assert srv.metrics_server is None
        # the registry still counts (and is what a web page or a test may read)
        assert srv.metrics.registry.get_sample_value("layercast_cloud_ready") == 1
    finally:
        await srv.stop(5)
    stopped = CloudServer(cloud_config(tmp_path / "b", metrics_port=0), codec=task_codec)
    await stopped.start()
    port_used = stopped.metrics_server.port
    await stopped.stop(5)
    assert stopped.metrics_server is None
    with pytest.raises(OSError):
        await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port_used), 2)
