"""Analytics.Infer cannot starve the cameras: its bitstreams are batched after camera frames, and
Infer calls beyond ``limits.max_concurrent_infer`` are refused with RESOURCE_EXHAUSTED.

The server test measures a camera's frames (acked per second, latency from send to ack) on a real
server on loopback, alone and while a viewer floods Infer with images, and prints both side by side.
Only robust behaviour is asserted: every camera frame answered, the flood's excess refused.
"""

from __future__ import annotations

import asyncio
import io
import statistics
import threading
import time
from pathlib import Path

import grpc
import numpy as np
from grpc import aio
from PIL import Image

from layercast.cloud.ingest.batcher import Batcher
from layercast.shared.rpc import analytics_pb2, analytics_pb2_grpc
from tests.cloud.conftest import TOKENS, EdgeStream, operator_channel
from tests.cloud.subprocess_server import cloud_process
from tests.conftest import smooth_image


async def test_low_priority_items_wait_until_no_other_item_does() -> None:
    gate, order = threading.Event(), []

    def infer(items: list[str]) -> list[str]:
        if items == ["busy"]:
            gate.wait(10)
        order.append(items)
        return items

    batcher: Batcher[str, str] = Batcher(infer, max_batch_size=8, max_queue_delay_s=0.0, workers=1)
    busy = await batcher.submit("busy")
    await asyncio.sleep(0.1)  # the worker is now inside the busy batch
    low = [await batcher.submit(f"infer-{i}", low_priority=True) for i in range(3)]
    high = [await batcher.submit(f"frame-{i}", key="cam") for i in range(3)]
    gate.set()
    await asyncio.gather(busy, *low, *high)
    # one camera's frames run one at a time, and all before the low-priority items
    assert order == [["busy"], ["frame-0"], ["frame-1"], ["frame-2"], ["infer-0", "infer-1", "infer-2"]]
    await batcher.close(5)


def _png(rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(smooth_image(rng, 128, 128)).save(buf, format="PNG")
    return buf.getvalue()


async def _camera_run(stream: EdgeStream, frames: list, first: int, count: int) -> tuple[float, list[float]]:
    """Send ``count`` frames one after the other, each once the previous is acked: (frames/s, latencies)."""
    latencies = []
    t0 = time.perf_counter()
    for seq in range(first, first + count):
        sent = time.perf_counter()
        stream.frame(seq, frames[seq % len(frames)].base)
        ack = await stream.recv_kind("ack", timeout=60)
        assert ack.sequence == seq
        latencies.append(time.perf_counter() - sent)
    return count / (time.perf_counter() - t0), latencies


def _summary(name: str, rate: float, lat: list[float]) -> str:
    q = statistics.quantiles(lat, n=20)
    return f"{name}: {rate:5.1f} frames/s acked, latency p50 {1000 * statistics.median(lat):6.1f} ms, p95 {1000 * q[18]:6.1f} ms"


async def test_camera_frames_keep_flowing_while_a_viewer_floods_infer(
    tmp_path: Path, task_codec, frames
) -> None:
    n = 40
    overrides = {"limits.max_concurrent_infer": 2, "batching.max_batch_size": 4}
    with cloud_process(tmp_path, **overrides) as cloud:  # its own process: the flood is measured from outside
        async with (
            aio.insecure_channel(cloud.target) as cam_ch,
            operator_channel(cloud.target, options=[("grpc.use_local_subchannel_pool", 1)]) as viewer_ch,
        ):
            stream = EdgeStream(cam_ch)
            stream.hello("cam-a", TOKENS["cam-a"], task_codec.base_model_id, next_sequence=1)
            await stream.recv_kind("welcome")
            await _camera_run(stream, frames, 1, 5)  # warm the path
            alone = await _camera_run(stream, frames, 6, n)

            infer = analytics_pb2_grpc.AnalyticsStub(viewer_ch).Infer
            image = _png(np.random.default_rng(3))
            outcomes: dict[str, int] = {"ok": 0, "refused": 0}
            messages: set[str] = set()
            stop = asyncio.Event()

            async def flood() -> None:
                while not stop.is_set():
                    try:
                        await infer(analytics_pb2.InferRequest(image=image), timeout=60)
                        outcomes["ok"] += 1
                    except aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                        outcomes["refused"] += 1
                        messages.add(exc.details().split(";")[0])
                        await asyncio.sleep(0.005)

            flooders = [asyncio.create_task(flood()) for _ in range(16)]
            await asyncio.sleep(0.5)
            try:
                flooded = await _camera_run(stream, frames, 6 + n, n)
            finally:
                stop.set()
                await asyncio.gather(*flooders)
            stream.close()
    print(
        "\n"
        + _summary("camera alone           ", *alone)
        + "\n"
        + _summary("camera with Infer flood", *flooded)
        + f"\nInfer flood (16 callers, limits.max_concurrent_infer = 2): {outcomes['ok']} answered, "
        f"{outcomes['refused']} refused with RESOURCE_EXHAUSTED"
    )
    # Every camera frame was answered in both runs (the loops above wait for each ack); the flood
    # got answers, and its excess was refused at the Infer bound.
    assert len(alone[1]) == len(flooded[1]) == n
    assert outcomes["ok"] >= 1 and outcomes["refused"] >= 1
    assert any("limits.max_concurrent_infer" in m for m in messages), messages
