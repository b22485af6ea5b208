"""The edge's Prometheus metrics follow real frames through a real EdgeApp (outbox, store,
link) talking to a real gRPC test cloud, and its /metrics endpoint serves them."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from edge_fake_cloud import CloudServer, eventually, link_config

from layercast.edge.app import EdgeApp
from layercast.edge.config import EdgeConfig, SourceConfig, load_edge_config
from layercast.edge.encoder import Encoder
from layercast.edge.metrics import DROP_REASONS, EdgeMetrics
from layercast.edge.stats import EdgeStats
from layercast.shared.errors import InvalidImage
from layercast.shared.prometheus import exposed_names
from tests.deploy.promtools import scrape

CAM = "cam-metrics"


@dataclass(frozen=True)
class Encoded:
    base: bytes
    enhancement: bytes | None


class SizedCodec:
    """Deterministic bitstreams whose sizes depend on the image (so bpp varies); can fail a batch."""

    base_model_id = "00112233445566aa"
    enhancement_model_id = "aa66554433221100"

    def __init__(self, fail_batches: int = 0) -> None:
        self.fail_batches = fail_batches
        self.batches: list[int] = []

    def encode_batch(self, images):
        if self.fail_batches:
            self.fail_batches -= 1
            raise InvalidImage("the test's codec refuses this batch")
        self.batches.append(len(images))
        out = []
        for im in images:
            digest = hashlib.sha256(im.tobytes()).digest()
            out.append(Encoded(digest[: 8 + im[0, 0, 0] % 16], digest * (1 + im[0, 0, 1] % 3)))
        return out


def images(n: int, seed: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8) for _ in range(n)]


def config(data_dir: Path, cloud: CloudServer, **extra) -> EdgeConfig:
    return EdgeConfig(
        camera_id=CAM,
        token="t0ken",
        data_dir=data_dir,
        link=link_config(cloud.address, drain_timeout_s=0.3),
        source=SourceConfig(spec="synthetic", fps=200.0),
        **extra,
    )


def value(app: EdgeApp, name: str, **labels: str) -> float | None:
    return app.registry.get_sample_value(name, {"camera": CAM, **labels})


async def test_counters_and_histograms_follow_the_frames(cloud: CloudServer, tmp_path):
    frames = images(8)
    cloud.servicer.reject = {3}  # the cloud refuses one frame
    codec = SizedCodec()
    app = EdgeApp(config(tmp_path / "edge", cloud), encoder=Encoder(codec, batch_max=3), source=frames)
    assert isinstance(app.stats, EdgeMetrics)
    await asyncio.wait_for(app.run(), 20)  # finite source: returns once all is acked or rejected
    n = len(frames)
    encoded = [SizedCodec.encode_batch(SizedCodec(), [im])[0] for im in frames]

    assert value(app, "layercast_edge_frames_captured_total") == n
    assert value(app, "layercast_edge_frames_encoded_total") == n
    assert value(app, "layercast_edge_frames_queued_total") == n
    assert value(app, "layercast_edge_frames_sent_total") == n
    assert value(app, "layercast_edge_frames_resent_total") == 0
    assert value(app, "layercast_edge_frames_acked_total") == n - 1
    assert value(app, "layercast_edge_frames_dropped_total", reason="rejected") == 1
    others = [r for r in DROP_REASONS if r != "rejected"]
    assert [value(app, "layercast_edge_frames_dropped_total", reason=r) for r in others] == [0] * len(others)
    base_bytes = sum(len(e.base) for e in encoded)
    assert value(app, "layercast_edge_base_encoded_bytes_total") == base_bytes
    assert value(app, "layercast_edge_base_sent_bytes_total") == base_bytes
    assert value(app, "layercast_edge_enhancement_stored_bytes_total") == sum(
        len(e.enhancement) for e in encoded
    )
    pixels = 24 * 32
    for layer, sizes in (
        ("base", [len(e.base) for e in encoded]),
        ("enhancement", [len(e.enhancement) for e in encoded]),
    ):
        assert value(app, "layercast_edge_frame_bpp_count", layer=layer) == n
        assert value(app, "layercast_edge_frame_bpp_sum", layer=layer) == pytest.approx(
            sum(8.0 * s / pixels for s in sizes)
        )
    assert value(app, "layercast_edge_encode_seconds_count") == len(codec.batches)
    assert value(app, "layercast_edge_encode_seconds_sum") == pytest.approx(app.stats.encode_seconds)
    assert value(app, "layercast_edge_outbox_frames") == 0
    assert value(app, "layercast_edge_connects_total") == 1
    (info,) = [s for f in app.registry.collect() if f.name == "layercast_build_info" for s in f.samples]
    assert info.labels["base_model_id"] == SizedCodec.base_model_id
    assert info.labels["enhancement_model_id"] == SizedCodec.enhancement_model_id


async def test_encode_errors_count_as_drops(cloud: CloudServer, tmp_path):
    codec = SizedCodec(fail_batches=1)
    app = EdgeApp(config(tmp_path / "edge", cloud), encoder=Encoder(codec, batch_max=1), source=images(4))
    await asyncio.wait_for(app.run(), 20)
    assert value(app, "layercast_edge_frames_dropped_total", reason="encode_error") == 1
    assert value(app, "layercast_edge_frames_encoded_total") == 3
    assert value(app, "layercast_edge_frames_acked_total") == 3


async def test_endpoint_serves_while_running_and_counts_reconnects(cloud: CloudServer, tmp_path):
    cloud.servicer.heartbeat_ms = 50
    endless = itertools.cycle(images(5))
    app = EdgeApp(
        config(tmp_path / "edge", cloud, metrics_port=0), encoder=Encoder(SizedCodec()), source=endless
    )
    app.config.source.fps = 50.0
    run = asyncio.create_task(app.run())
    try:
        await eventually(lambda: app.stats.frames_acked >= 3, what="three acks")
        assert app.metrics_server is not None
        url = app.metrics_server.url
        got = await scrape(url)
        assert got.value("layercast_edge_connected", camera=CAM) == 1
        assert 3 <= got.value("layercast_edge_frames_acked_total", camera=CAM) <= app.stats.frames_acked
        assert got.value("layercast_edge_frames_encoded_total", camera=CAM) >= 3
        assert got.value("layercast_edge_frame_bpp_count", camera=CAM, layer="base") >= 3
        assert got.value("process_cpu_seconds_total") > 0

        cloud.servicer.current.drop()  # the cloud drops the stream: the edge reconnects
        await eventually(lambda: app.stats.connects >= 2, what="a reconnect")
        got = await scrape(url)
        assert got.value("layercast_edge_reconnects_total", camera=CAM) >= 1
        assert got.value("layercast_edge_disconnects_total", camera=CAM) >= 1
        assert got.value("layercast_edge_connects_total", camera=CAM) >= 2
        port = app.metrics_server.port
    finally:
        app.request_stop()
        await asyncio.wait_for(run, 20)
    assert app.metrics_server is None
    with pytest.raises(OSError):
        await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port), 2)


@pytest.mark.parametrize("port", [None, -1])
async def test_metrics_off(cloud: CloudServer, tmp_path, port):
    app = EdgeApp(
        config(tmp_path / "edge", cloud, metrics_port=port), encoder=Encoder(SizedCodec()), source=images(2)
    )
    await asyncio.wait_for(app.run(), 20)
    assert app.metrics_server is None
    assert value(app, "layercast_edge_frames_acked_total") == 2  # still counted in the registry


def test_config_and_plain_stats():
    cfg = load_edge_config(
        environ={"LAYERCAST_EDGE_METRICS_PORT": "9465", "LAYERCAST_EDGE_METRICS_LISTEN": "0.0.0.0"}
    )
    assert cfg.metrics_port == 9465 and cfg.metrics_listen == "0.0.0.0"
    assert load_edge_config(environ={}).metrics_port is None
    # An injected plain EdgeStats still gives every counter (histograms need EdgeMetrics).
    app = EdgeApp(EdgeConfig(camera_id=CAM), stats=EdgeStats())
    app.stats.record_sent(100, resent=True)
    assert value(app, "layercast_edge_frames_resent_total") == 1
    assert value(app, "layercast_edge_base_sent_bytes_total") == 100
    assert "layercast_edge_frames_dropped_total" in exposed_names(app.registry)
