"""Pictures at rest on the edge, as it ships: with no key configured the edge makes one (0600) on
first start, seals enhancement layers and outbox base frames with it, keeps every file 0600 and
every folder 0700, reuses the key after a restart and refuses another key. Plaintext only when
``store.encryption = "off"``, with a warning."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from edge_fake_cloud import CloudServer, eventually, link_config

from layercast.edge.app import EdgeApp
from layercast.edge.config import EdgeConfig, EnhancementStoreConfig, SourceConfig
from layercast.edge.encoder import Encoder
from layercast.edge.enhancement_store import LookupStatus
from layercast.edge.sealing import write_key_file
from layercast.shared.errors import ConfigError, StorageError

BASE_MARK = b"BASE-BITSTREAM-OF-THE-CAMERA:"
ENH_MARK = b"ENHANCEMENT-LAYER-FULL-PICTURE:"


class StandInCodec:
    """Bitstreams that are easy to find in raw bytes."""

    base_model_id = "0123456789abcdef"
    enhancement_model_id = "fedcba9876543210"

    def encode_batch(self, images):
        from types import SimpleNamespace

        return [
            SimpleNamespace(base=BASE_MARK + im.tobytes()[:32], enhancement=ENH_MARK + im.tobytes()[:64])
            for im in images
        ]


def frames(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8) for _ in range(n)]


def config(cloud: CloudServer, data_dir: Path, **store: object) -> EdgeConfig:
    return EdgeConfig(
        camera_id="cam-rest",
        token="t0ken",
        data_dir=data_dir,
        link=link_config(cloud.address, drain_timeout_s=0.2),
        source=SourceConfig(spec="synthetic", fps=200.0),
        store=EnhancementStoreConfig(**store),
    )


async def run_until_sent(cloud: CloudServer, cfg: EdgeConfig, images: list[np.ndarray]) -> EdgeApp:
    """Run the edge until the cloud has seen every frame (the cloud may hold its acks), then stop it."""
    app = EdgeApp(cfg, encoder=Encoder(StandInCodec()), source=iter(images))
    task = asyncio.create_task(app.run())
    seen = len(cloud.servicer.frames)
    await eventually(lambda: len(cloud.servicer.frames) >= seen + len(images) or task.done(), 20, "frames")
    app.request_stop()
    await asyncio.wait_for(task, 20)
    return app


def raw_bytes(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def modes(root: Path) -> dict[str, int]:
    out = {str(root): stat.S_IMODE(root.stat().st_mode)}
    out.update({str(p): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*")})
    return out


async def test_default_config_seals_pictures_with_a_key_it_makes(cloud: CloudServer, tmp_path):
    cloud.servicer.auto_ack = False  # base frames stay in the outbox, on disk
    old_umask = os.umask(0o022)  # what a service gets by default: world-readable unless the code says
    try:
        images = frames()
        cfg = config(cloud, tmp_path / "edge")
        app = await run_until_sent(cloud, cfg, images)
    finally:
        os.umask(old_umask)
    assert [f.base for f in cloud.servicer.frames[:3]] == [BASE_MARK + im.tobytes()[:32] for im in images]

    key = cfg.data_dir / "edge.key"
    assert key.is_file() and app.store is not None
    files = raw_bytes(cfg.data_dir)
    assert cfg.outbox_path in files and len([p for p in files if p.suffix == ".lce"]) == 3
    for path, data in files.items():
        assert BASE_MARK not in data and ENH_MARK not in data, f"{path} holds a picture in plaintext"
    for path, mode in modes(cfg.data_dir).items():
        assert mode == (0o700 if Path(path).is_dir() else 0o600), (path, oct(mode))

    # Restart: the same key is read back, the unacknowledged frames are sent again as they were
    # and the enhancement layers are served.
    cloud.servicer.auto_ack = True
    before = len(cloud.servicer.frames)
    again = EdgeApp(cfg, encoder=Encoder(StandInCodec()), source=iter([]))
    await asyncio.wait_for(again.run(), 20)
    resent = {f.sequence: f.base for f in cloud.servicer.frames[before:]}
    assert resent == {i + 1: BASE_MARK + im.tobytes()[:32] for i, im in enumerate(images)}
    got = again.store.get(2)
    assert got.status is LookupStatus.FOUND and got.data == ENH_MARK + images[1].tobytes()[:64]
    assert key.read_bytes() == files[key]


async def test_another_key_is_refused(cloud: CloudServer, tmp_path):
    cloud.servicer.auto_ack = False
    cfg = config(cloud, tmp_path / "edge")
    await run_until_sent(cloud, cfg, frames())
    other = tmp_path / "other.key"
    write_key_file(other)
    wrong = config(cloud, cfg.data_dir, encryption_key_file=other)
    with pytest.raises(StorageError, match="encrypted under key [0-9a-f]{16}, but this edge's key is"):
        await asyncio.wait_for(EdgeApp(wrong, encoder=Encoder(StandInCodec()), source=iter([])).run(), 20)
    plain = config(cloud, cfg.data_dir, encryption="off")
    with pytest.raises(StorageError, match="no key is configured"):
        await asyncio.wait_for(EdgeApp(plain, encoder=Encoder(StandInCodec()), source=iter([])).run(), 20)


async def test_encryption_off_is_plaintext_and_warned(cloud: CloudServer, tmp_path, caplog):
    cloud.servicer.auto_ack = False
    cfg = config(cloud, tmp_path / "edge", encryption="off")
    with caplog.at_level(logging.WARNING, logger="layercast.edge.sealing"):
        await run_until_sent(cloud, cfg, frames())
    assert any("plaintext" in r.getMessage() for r in caplog.records)
    assert not (cfg.data_dir / "edge.key").exists()
    data = raw_bytes(cfg.data_dir)
    assert any(ENH_MARK in b for b in data.values()) and any(BASE_MARK in b for b in data.values())
    with pytest.raises(ConfigError, match='encryption = "off" and an encryption key'):
        config_with_both = config(cloud, tmp_path / "e2", encryption="off", encryption_key="x")
        await EdgeApp(config_with_both, encoder=Encoder(StandInCodec()), source=iter([])).run()


def test_an_outbox_written_in_the_clear_is_sealed_when_opened_with_a_key(tmp_path):
    import sqlite3

    from layercast.edge.outbox import Outbox
    from layercast.edge.sealing import AesGcmSealer, new_key

    path = tmp_path / "outbox.sqlite3"
    db = sqlite3.connect(path)  # the schema before frames had a sealer column
    db.executescript(
        "CREATE TABLE frames (sequence INTEGER PRIMARY KEY, capture_time_us INTEGER NOT NULL, "
        "base BLOB NOT NULL, size INTEGER NOT NULL, sent_count INTEGER NOT NULL DEFAULT 0);"
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "INSERT INTO counters VALUES ('next_sequence', 2);"
        f"INSERT INTO frames VALUES (1, 5, x'{(BASE_MARK + b'one').hex()}', 32, 0);"
    )
    db.commit()
    db.close()
    with Outbox(path, sealer=AesGcmSealer(new_key())) as ob:
        ob.append(6, BASE_MARK + b"two")
        assert [(f.sequence, f.base) for f in ob.take(10)] == [
            (1, BASE_MARK + b"one"),
            (2, BASE_MARK + b"two"),
        ]
    assert not any(BASE_MARK in b for b in raw_bytes(tmp_path).values())
    with pytest.raises(StorageError, match="encrypted under key"):
        Outbox(path, sealer=AesGcmSealer(new_key()))
