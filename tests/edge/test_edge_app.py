"""EdgeApp end to end: folder / generator sources, a stand-in codec, the real outbox, store and link."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from edge_fake_cloud import CloudServer, eventually, link_config
from PIL import Image

from layercast.edge.app import EdgeApp
from layercast.edge.config import EdgeConfig, EnhancementStoreConfig, OutboxConfig, SourceConfig
from layercast.edge.encoder import Encoder
from layercast.edge.enhancement_store import LookupStatus
from layercast.shared.errors import ConfigError
from layercast.shared.rpc import edge_pb2


@dataclass(frozen=True)
class Encoded:
    base: bytes
    enhancement: bytes | None


class StandInCodec:
    """Deterministic bytes derived from the pixels (the link and stores deal in bytes only)."""

    base_model_id = "0123456789abcdef"
    enhancement_model_id = "fedcba9876543210"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.batches: list[int] = []

    @staticmethod
    def encode_one(image: np.ndarray) -> Encoded:
        digest = hashlib.sha256(image.tobytes()).digest()
        h, w, _ = image.shape
        return Encoded(b"BASE" + bytes([h, w]) + digest[:16], b"ENH" + digest * 2)

    def encode_batch(self, images):
        self.batches.append(len(images))
        if self.delay_s:
            time.sleep(self.delay_s)
        return [self.encode_one(im) for im in images]


def write_images(folder: Path, n: int, seed: int) -> list[np.ndarray]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        img = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"img_{i:03d}.png")
        images.append(img)
    return images


def edge_config(data_dir: Path, cloud: CloudServer, source: str, **source_kw) -> EdgeConfig:
    return EdgeConfig(
        camera_id="cam-app",
        token="t0ken",
        data_dir=data_dir,
        link=link_config(cloud.address, drain_timeout_s=0.3),
        source=SourceConfig(spec=source, fps=200.0, **source_kw),
    )


async def test_folder_to_cloud_all_frames_in_order_with_enhancements_kept(cloud: CloudServer, tmp_path):
    images = write_images(tmp_path / "frames", 6, seed=1)
    codec = StandInCodec()
    app = EdgeApp(
        edge_config(tmp_path / "edge", cloud, f"folder:{tmp_path / 'frames'}"), encoder=Encoder(codec)
    )
    stats = await asyncio.wait_for(app.run(), 20)  # a finite source: returns once everything is acked
    fc = cloud.servicer
    assert [f.sequence for f in fc.frames] == [1, 2, 3, 4, 5, 6]
    assert [f.base for f in fc.frames] == [StandInCodec.encode_one(im).base for im in images]
    times = [f.capture_time_us for f in fc.frames]
    assert times == sorted(times) and abs(times[0] / 1e6 - time.time()) < 60
    hello = fc.streams[0].hello
    assert (hello.camera_id, hello.token, hello.base_model_id) == ("cam-app", "t0ken", "0123456789abcdef")
    assert list(hello.capabilities) == ["enhancement"]
    assert stats.frames_captured == stats.frames_encoded == stats.frames_acked == 6
    assert stats.frames_dropped_capture == 0 and stats.store_errors == 0
    assert app.store is not None
    for seq, im in zip(range(1, 7), images, strict=True):
        got = app.store.get(seq)
        assert got.status is LookupStatus.FOUND and got.data == StandInCodec.encode_one(im).enhancement


async def test_restart_resends_unacked_and_continues_sequences(cloud: CloudServer, tmp_path):
    fc = cloud.servicer
    fc.auto_ack = False  # the cloud stores frames but its acks never arrive
    write_images(tmp_path / "a", 4, seed=2)
    cfg = edge_config(tmp_path / "edge", cloud, f"folder:{tmp_path / 'a'}")
    app = EdgeApp(cfg, encoder=Encoder(StandInCodec()))
    task = asyncio.create_task(app.run())
    await eventually(lambda: len(fc.frames) == 4, what="four frames sent")
    app.request_stop()
    await asyncio.wait_for(task, 10)
    assert app.outbox is not None and app.stats.frames_acked == 0

    fc.auto_ack = True
    write_images(tmp_path / "b", 2, seed=3)
    cfg2 = edge_config(tmp_path / "edge", cloud, f"folder:{tmp_path / 'b'}")
    app2 = EdgeApp(cfg2, encoder=Encoder(StandInCodec()))
    await asyncio.wait_for(app2.run(), 20)
    second = fc.streams[-1]
    assert second.hello.next_sequence in (5, 7)  # 5 if it connected before encoding the new frames
    assert [f.sequence for f in second.frames] == [1, 2, 3, 4, 5, 6]
    assert [f.resent for f in second.frames] == [True] * 4 + [False] * 2
    assert sorted(fc.stored) == [1, 2, 3, 4, 5, 6]
    assert app2.stats.frames_acked == 6 and app2.stats.frames_acked_duplicate == 4


async def test_slow_encoder_batches_and_counts_every_dropped_capture(cloud: CloudServer, tmp_path):
    rng = np.random.default_rng(4)

    def camera():
        while True:
            yield rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)

    codec = StandInCodec(delay_s=0.04)
    cfg = edge_config(tmp_path / "edge", cloud, "synthetic", limit=60, queue_frames=3)
    cfg.encoder.batch_max = 3
    app = EdgeApp(cfg, encoder=Encoder(codec, batch_max=3), source=camera())
    stats = await asyncio.wait_for(app.run(), 30)
    assert stats.frames_captured == 60
    assert stats.frames_dropped_capture > 0
    assert stats.frames_encoded + stats.frames_dropped_capture == 60  # every frame is on the books
    assert max(codec.batches) > 1  # it batched when behind
    assert app.outbox_stats is not None
    drops = app.outbox_stats.drops_by_reason
    assert drops == {"capture_overflow": stats.frames_dropped_capture}
    assert [f.sequence for f in cloud.servicer.frames] == list(range(1, stats.frames_encoded + 1))


async def test_outbox_bound_drops_oldest_while_cloud_is_away(cloud: CloudServer, tmp_path):
    await cloud.stop()  # nobody listening
    write_images(tmp_path / "f", 8, seed=5)
    cfg = edge_config(tmp_path / "edge", cloud, f"folder:{tmp_path / 'f'}")
    cfg.outbox = OutboxConfig(max_frames=5)
    app = EdgeApp(cfg, encoder=Encoder(StandInCodec()))
    task = asyncio.create_task(app.run())
    await eventually(lambda: app.stats.frames_queued == 8, what="eight frames queued")
    app.request_stop()
    await asyncio.wait_for(task, 10)
    await cloud.start()
    cfg.source = SourceConfig(spec=f"folder:{tmp_path / 'f'}", fps=200.0, limit=1)
    cfg.outbox = OutboxConfig(max_frames=10)  # room for the new frame without another drop
    app2 = EdgeApp(cfg, encoder=Encoder(StandInCodec()))
    await asyncio.wait_for(app2.run(), 20)
    fc = cloud.servicer
    # 1..3 were dropped (oldest first); 4..8 survived the restart; 9 is new. 5 + 1 = 6 arrive, 3 counted.
    assert sorted(fc.stored) == [4, 5, 6, 7, 8, 9]
    assert app2.outbox is not None
    assert app2.stats.frames_acked == 6
    assert app.stats.frames_dropped_outbox == 3
    assert app2.store is not None and app2.store.get(2).status is LookupStatus.NOT_FOUND
    assert app2.store.get(4).status is LookupStatus.FOUND


async def test_broken_enhancement_store_does_not_stop_the_base_stream(cloud: CloudServer, tmp_path):
    write_images(tmp_path / "f", 3, seed=6)
    cfg = edge_config(tmp_path / "edge", cloud, f"folder:{tmp_path / 'f'}")
    cfg.store = EnhancementStoreConfig(max_bytes=10_000)
    cfg.store_dir.parent.mkdir(parents=True)
    cfg.store_dir.write_text("a file where the store directory should be")
    fc = cloud.servicer
    fc.auto_ack = False  # keep the app running (it waits for acks) while we ask for an enhancement
    app = EdgeApp(cfg, encoder=Encoder(StandInCodec()))
    task = asyncio.create_task(app.run())
    await eventually(lambda: len(fc.frames) == 3, what="three frames")
    fc.current.send(enhancement_request=edge_pb2.EnhancementRequest(request_id="x", sequence=2))
    await eventually(lambda: fc.responses, what="an answer")
    fc.current.ack(1, 2, 3)
    await asyncio.wait_for(task, 20)
    assert app.stats.store_errors == 1 and "enhancement store" in app.stats.last_error
    assert app.stats.frames_acked == 3
    resp = cloud.servicer.responses[0]
    # the edge is meant to keep them: "the store failed", not "this edge keeps none"
    assert resp.unavailable.reason == edge_pb2.EnhancementUnavailable.STORE_ERROR
    assert "cannot open its enhancement store" in resp.unavailable.message
    assert not app.stats.store_healthy


async def test_enhancement_store_that_could_not_be_opened_is_retried_until_it_opens(
    cloud: CloudServer, tmp_path, monkeypatch
):
    monkeypatch.setattr("layercast.edge.app.STORE_RETRY_S", 0.05)
    write_images(tmp_path / "f", 2, seed=8)
    cfg = edge_config(tmp_path / "edge", cloud, f"folder:{tmp_path / 'f'}")
    cfg.store = EnhancementStoreConfig(max_bytes=10_000)
    cfg.store_dir.parent.mkdir(parents=True)
    cfg.store_dir.write_text("in the way")
    fc = cloud.servicer
    fc.auto_ack = False  # keep the app running
    app = EdgeApp(cfg, encoder=Encoder(StandInCodec()))
    task = asyncio.create_task(app.run())
    await eventually(lambda: len(fc.frames) == 2 and app.stats.store_errors >= 3, what="retries")
    assert app.store is None and not app.stats.store_healthy
    cfg.store_dir.unlink()  # the disk is back
    await eventually(lambda: app.store is not None, what="the store to open")
    assert app.link is not None and app.link.store is app.store and not app.link.store_unavailable
    assert app.stats.store_healthy
    fc.current.send(enhancement_request=edge_pb2.EnhancementRequest(request_id="y", sequence=1))
    await eventually(lambda: fc.responses, what="an answer")
    # frame 1 was captured while the store was away: the reopened store never had it
    assert fc.responses[0].unavailable.reason == edge_pb2.EnhancementUnavailable.NOT_FOUND
    fc.current.ack(1, 2)
    await asyncio.wait_for(task, 20)


def test_one_process_per_data_dir(tmp_path):
    cfg = EdgeConfig(data_dir=tmp_path / "edge")
    a, b = EdgeApp(cfg), EdgeApp(cfg)
    a._lock_data_dir()
    try:
        with pytest.raises(ConfigError, match="in use"):
            b._lock_data_dir()
    finally:
        a._unlock_data_dir()
    b._lock_data_dir()
    b._unlock_data_dir()
