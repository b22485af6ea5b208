"""A depth camera's colour map, and the live feed riding out a cloud that starts late:
real CloudServer, frames sent over a real EdgeLink stream, the page served by uvicorn."""

from __future__ import annotations

import asyncio
import io
import json
import socket

import httpx
import numpy as np
import pytest
from grpc import aio
from PIL import Image

from layercast.cloud.server import CloudServer
from layercast.cloud.web.app import build_web_server, create_app
from tests.cloud.conftest import TOKENS, EdgeStream, cloud_config, make_task_codec
from tests.cloud.web.stack import eventually, login, web_settings
from tests.conftest import smooth_image


async def _serve(settings):
    server = build_web_server(create_app(settings), "127.0.0.1", 0)
    task = asyncio.create_task(server.serve())
    port = await server.wait_started()
    return server, task, port


async def _stop(server, task):
    server.should_exit = True
    await asyncio.wait_for(task, 15)


async def _send_frames(channel: aio.Channel, codec, n: int, size=(64, 48)) -> EdgeStream:
    rng = np.random.default_rng(3)
    encoded = codec.encode_batch([smooth_image(rng, size[1], size[0]) for _ in range(n)])
    e = EdgeStream(channel)
    e.hello("cam-a", TOKENS["cam-a"], codec.base_model_id, next_sequence=1, capabilities=["enhancement"])
    await e.recv_kind("welcome")
    for i, enc in enumerate(encoded, start=1):
        e.frame(i, enc.base)
    for _ in range(n):
        await e.recv_kind("ack", skip=("credits", "heartbeat"))
    return e


async def test_depth_camera_gets_a_colour_map_with_its_range(tmp_path):
    codec = make_task_codec("depth")
    cloud = CloudServer(cloud_config(tmp_path), codec=codec)
    await cloud.start()
    server, task, port = await _serve(web_settings(cloud.target, tmp_path / "web"))
    try:
        async with aio.insecure_channel(cloud.target) as ch:
            e = await _send_frames(ch, codec, 2)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
                await login(c, "bob")

                async def result():
                    r = await c.get("/api/frames/cam-a/2/result")
                    return r.json() if r.status_code == 200 else None

                res = await eventually(result, 30, "the depth result")
                assert res["task"] == "depth" and res["boxes"] == []
                d = res["depth"]
                assert d["encoding"] == "png16" and d["width"] > 0 and d["far_m"] > d["near_m"]
                r = await c.get("/api/frames/cam-a/2/depth.png")
                assert r.status_code == 200 and r.headers["content-type"] == "image/png"
                assert r.headers["cache-control"] == "no-store"
                img = Image.open(io.BytesIO(r.content))
                assert img.mode == "RGB" and img.size == (d["width"], d["height"])
                assert float(r.headers["x-depth-near-m"]) == pytest.approx(d["near_m"], abs=1e-3)
                assert len(np.unique(np.asarray(img).reshape(-1, 3), axis=0)) > 1  # not a flat picture
                cams = (await c.get("/api/cameras")).json()["cameras"]
                assert [(x["camera_id"], x["task"]) for x in cams] == [("cam-a", "depth")]
                page = await c.get("/cameras/cam-a")
                assert page.status_code == 200 and 'id="pv-seg"' in page.text  # the depth toggle
            e.close()
    finally:
        await _stop(server, task)
        await cloud.stop(5.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_live_feed_reconnects_when_the_cloud_comes_up_late(tmp_path, task_codec):
    port = _free_port()
    server, task, web_port = await _serve(web_settings(f"127.0.0.1:{port}", tmp_path / "web"))
    feed = server.app.state.web.feed
    cloud = None
    try:
        await eventually(lambda: feed.state == "reconnecting", 10, "the feed to notice no cloud")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web_port}", timeout=30) as c:
            await login(c, "bob")
            r = await c.get("/api/cameras")
            assert r.status_code == 502 and r.json()["error"] == "unreachable"
            assert (await c.get("/")).status_code == 200  # the page itself still loads
            cloud = CloudServer(cloud_config(tmp_path, port=port), codec=task_codec)
            await cloud.start()
            statuses, results = [], []
            async with c.stream("GET", "/api/events") as resp:
                event = None
                sender = None
                async for line in resp.aiter_lines():
                    if line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: "):
                        data = json.loads(line.removeprefix("data: "))
                        if event == "status":
                            statuses.append(data["state"])
                            if data["state"] == "live" and sender is None:
                                ch = aio.insecure_channel(cloud.target)
                                sender = asyncio.create_task(_send_frames(ch, task_codec, 3))
                        elif event == "result":
                            results.append(data["sequence"])
                            if len(results) == 3:
                                break
            await sender
            await ch.close()
        assert statuses[0] in ("reconnecting", "connecting") and "live" in statuses
        assert results == [1, 2, 3]
    finally:
        await _stop(server, task)
        if cloud is not None:
            await cloud.stop(5.0)
