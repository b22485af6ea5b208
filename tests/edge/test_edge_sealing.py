"""Encryption at rest of the enhancement store: AES-256-GCM round trip, nothing readable on disk,
a wrong key or a changed file refused with a clear error, key files and configuration, and the
edge app storing encrypted layers end to end."""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from edge_fake_cloud import CloudServer, link_config

from layercast.commands import edge as cli
from layercast.edge.app import EdgeApp
from layercast.edge.config import EdgeConfig, EnhancementStoreConfig, SourceConfig, load_edge_config
from layercast.edge.encoder import Encoder
from layercast.edge.enhancement_store import HEADER_SIZE, EnhancementStore, LookupStatus
from layercast.edge.sealing import (
    OVERHEAD,
    AesGcmSealer,
    decode_key,
    encode_key,
    key_id,
    new_key,
    read_key_file,
    sealer_from_config,
    write_key_file,
)
from layercast.shared.errors import ConfigError, StorageError

PAYLOAD = b"".join(f"enhancement layer of frame, secret pixels {i:05d};".encode() for i in range(200))


def open_store(root: Path, sealer=None) -> EnhancementStore:
    return EnhancementStore(root, "cam-1", max_bytes=1 << 20, max_age_s=3600, sealer=sealer)


def stored_file(root: Path, seq: int) -> Path:
    (path,) = [p for p in root.iterdir() if p.name.startswith(f"{seq:020d}-")]
    return path


def rewrite_payload(path: Path, payload: bytes) -> None:
    """Replace a file's payload and fix its length and CRC, as someone who knows the format would."""
    raw = path.read_bytes()
    head = bytearray(raw[:HEADER_SIZE])
    head[24:32] = struct.pack("<II", len(payload), zlib.crc32(payload))
    path.write_bytes(bytes(head) + payload)


def test_round_trip_and_nothing_readable_on_disk(tmp_path):
    sealer = AesGcmSealer(new_key())
    store = open_store(tmp_path, sealer)
    store.put(1, PAYLOAD)
    store.put(2, b"")  # empty layers too
    raw = stored_file(tmp_path, 1).read_bytes()
    assert len(raw) == HEADER_SIZE + len(PAYLOAD) + OVERHEAD
    chunks = {PAYLOAD[i : i + 12] for i in range(0, len(PAYLOAD) - 12, 7)}
    assert not any(c in raw for c in chunks)  # not one 12-byte piece of the plaintext
    assert b"secret" not in raw and b"frame" not in raw
    assert open_store(tmp_path, sealer).get(1).data == PAYLOAD  # reopened with the same key
    assert store.get(2).data == b""
    # The same data twice: different bytes (fresh nonce per file).
    store.put(3, PAYLOAD)
    assert stored_file(tmp_path, 3).read_bytes()[HEADER_SIZE:] != raw[HEADER_SIZE:]


def test_a_wrong_key_is_named_not_decrypted_to_garbage(tmp_path):
    k1, k2 = new_key(), new_key()
    open_store(tmp_path, AesGcmSealer(k1)).put(5, PAYLOAD)
    with pytest.raises(StorageError) as info:
        open_store(tmp_path, AesGcmSealer(k2)).get(5)
    msg = str(info.value)
    assert (
        f"encrypted under key {key_id(k1).hex()}" in msg and f"this edge's key is {key_id(k2).hex()}" in msg
    )
    assert "frame 5" in msg and encode_key(k1) not in msg and encode_key(k2) not in msg


def test_tampering_is_detected(tmp_path):
    sealer = AesGcmSealer(new_key())
    store = open_store(tmp_path, sealer)
    store.put(1, PAYLOAD)
    store.put(2, PAYLOAD[::-1])
    path = stored_file(tmp_path, 1)
    sealed = path.read_bytes()[HEADER_SIZE:]

    # One bit flipped in the ciphertext, checksum fixed up: the GCM tag catches it.
    flipped = bytearray(sealed)
    flipped[OVERHEAD + 10] ^= 0x01
    rewrite_payload(path, bytes(flipped))
    with pytest.raises(StorageError, match="fails authentication"):
        store.get(1)
    # The sealed payload of frame 2 moved into frame 1's file: bound to its frame by the AAD.
    rewrite_payload(path, stored_file(tmp_path, 2).read_bytes()[HEADER_SIZE:])
    with pytest.raises(StorageError, match="fails authentication"):
        store.get(1)
    # Cut short.
    rewrite_payload(path, sealed[:10])
    with pytest.raises(StorageError, match="shorter"):
        store.get(1)
    # Another camera's store with the same key cannot read it either (AAD names the camera).
    rewrite_payload(path, sealed)
    other = EnhancementStore(tmp_path, "cam-2", max_bytes=1 << 20, max_age_s=3600, sealer=sealer)
    with pytest.raises(StorageError, match="fails authentication"):
        other.get(1)
    assert store.get(1).data == PAYLOAD  # the original bytes are fine again
    assert store.get(2).data == PAYLOAD[::-1]


def test_plain_and_encrypted_files_are_refused_by_the_other_kind_of_store(tmp_path):
    open_store(tmp_path).put(1, PAYLOAD)  # written before encryption was turned on
    with pytest.raises(StorageError, match="stored without encryption, but this store is encrypted"):
        open_store(tmp_path, AesGcmSealer(new_key())).get(1)
    open_store(tmp_path / "b", AesGcmSealer(new_key())).put(1, PAYLOAD)
    with pytest.raises(StorageError, match=r"stored encrypted \(AES-256-GCM\), but this store is without"):
        open_store(tmp_path / "b").get(1)


def test_key_files_and_configuration(tmp_path, capsys):
    path = tmp_path / "keys" / "edge.key"
    kid = write_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    key = read_key_file(path)
    assert len(key) == 32 and key_id(key) == kid
    with pytest.raises(ConfigError, match="never overwritten"):
        write_key_file(path)

    # Errors name the setting, never the key text.
    bad = tmp_path / "bad.key"
    bad.write_text(base64.b64encode(b"k" * 16).decode())
    with pytest.raises(ConfigError, match="16 bytes, an AES-256 key is 32") as info:
        read_key_file(bad)
    assert base64.b64encode(b"k" * 16).decode() not in str(info.value)
    with pytest.raises(ConfigError, match="not a base64 key") as info:
        decode_key("not base64 at all: s3cr3t!", source="store.encryption_key")
    assert "s3cr3t" not in str(info.value)
    with pytest.raises(ConfigError, match="choose one"):
        sealer_from_config(path, encode_key(key))
    with pytest.raises(ConfigError, match="cannot read the key"):
        sealer_from_config(tmp_path / "missing.key", "")
    assert sealer_from_config(None, "") is None

    # From the environment; never printed.
    text = encode_key(key)
    cfg = load_edge_config(environ={"LAYERCAST_EDGE_STORE__ENCRYPTION_KEY": text})
    assert cfg.store.encryption_key == text and text not in repr(cfg)
    sealer = sealer_from_config(None, cfg.store.encryption_key)
    assert sealer is not None and sealer.key_id == kid and text not in repr(sealer)
    with pytest.raises(ConfigError) as info:  # a wrong type: the value is not quoted
        load_edge_config(overrides={"token": 12345678}, environ={})
    assert "12345678" not in str(info.value) and "secret" in str(info.value)

    # `layercast edge --new-key FILE`
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    out = tmp_path / "new.key"
    assert cli.run(parser.parse_args(["edge", "--new-key", str(out)])) == 0
    printed = capsys.readouterr().out
    new = read_key_file(out)
    assert key_id(new).hex() in printed and encode_key(new) not in printed
    args = parser.parse_args(["edge", "--encryption-key-file", str(out)])
    assert cli.overrides_from_args(args)["store.encryption_key_file"] == out


class StandInCodec:
    base_model_id = "0123456789abcdef"
    enhancement_model_id = "fedcba9876543210"

    def encode_batch(self, images):
        from types import SimpleNamespace

        return [
            SimpleNamespace(base=b"BASE" + bytes(8), enhancement=PAYLOAD + im.tobytes()[:64]) for im in images
        ]


async def test_the_edge_app_stores_encrypted_layers(cloud: CloudServer, tmp_path):
    key_file = tmp_path / "edge.key"
    write_key_file(key_file)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8) for _ in range(3)]
    cfg = EdgeConfig(
        camera_id="cam-enc",
        token="t0ken",
        data_dir=tmp_path / "edge",
        link=link_config(cloud.address, drain_timeout_s=0.3),
        source=SourceConfig(spec="synthetic", fps=200.0),
        store=EnhancementStoreConfig(encryption_key_file=key_file),
    )
    app = EdgeApp(cfg, encoder=Encoder(StandInCodec()), source=iter(frames))
    await asyncio.wait_for(app.run(), 20)
    assert app.store is not None and isinstance(app.store.sealer, AesGcmSealer)
    files = [p for p in cfg.store_dir.iterdir() if p.suffix == ".lce"]
    assert len(files) == 3 and not any(PAYLOAD[:32] in p.read_bytes() for p in files)
    got = app.store.get(2)
    assert got.status is LookupStatus.FOUND and got.data == PAYLOAD + frames[1].tobytes()[:64]

    # A key that does not parse stops the edge before anything is written in the clear.
    (tmp_path / "bad.key").write_text("short")
    os.chmod(tmp_path / "bad.key", 0o600)
    bad = EdgeConfig(
        camera_id="cam-enc2",
        data_dir=tmp_path / "edge2",
        link=link_config(cloud.address),
        store=EnhancementStoreConfig(encryption_key_file=tmp_path / "bad.key"),
    )
    with pytest.raises(ConfigError, match="store.encryption_key_file"):
        await asyncio.wait_for(EdgeApp(bad, encoder=Encoder(StandInCodec()), source=iter(frames)).run(), 20)
