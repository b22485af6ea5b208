"""The enhancement store: retention by bytes and age, expired vs not found, failures."""

from __future__ import annotations

import errno
import os

import pytest

from layercast.edge.enhancement_store import HEADER_SIZE, EnhancementStore, LookupStatus
from layercast.shared.errors import StorageError, StorageFull


class Clock:
    def __init__(self) -> None:
        self.now_us = 1_700_000_000_000_000

    def __call__(self) -> int:
        return self.now_us

    def advance(self, seconds: float) -> None:
        self.now_us += int(seconds * 1_000_000)


def blob(seq: int, size: int = 100) -> bytes:
    return bytes((seq * 7 + i) % 256 for i in range(size))


def open_store(root, clock=None, **kw):
    kw.setdefault("max_bytes", 10_000)
    kw.setdefault("max_age_s", 60)
    return EnhancementStore(root, "cam-1", clock_us=clock or Clock(), **kw)


def test_put_get_roundtrip_and_reopen(tmp_path):
    clock = Clock()
    store = open_store(tmp_path, clock)
    for s in (1, 2, 3):
        store.put(s, blob(s, 50 + s))
    got = store.get(2)
    assert got.status is LookupStatus.FOUND and got.data == blob(2, 52)
    again = open_store(tmp_path, clock)  # index rebuilt from the directory
    assert len(again) == 3 and again.stats().bytes == 51 + 52 + 53
    assert again.get(3).data == blob(3, 53)


def test_retention_by_bytes_evicts_oldest_and_reports_expired(tmp_path):
    store = open_store(tmp_path, max_bytes=350)
    for s in range(1, 6):
        store.put(s, blob(s))  # 100 bytes each: only three fit
    assert sorted(s for s in range(1, 6) if s in store) == [3, 4, 5]
    assert store.stats().bytes == 300
    assert store.get(1).status is LookupStatus.EXPIRED
    assert store.get(2).status is LookupStatus.EXPIRED
    assert store.get(4).data == blob(4)
    missing = store.get(99)
    assert missing.status is LookupStatus.NOT_FOUND
    assert "99" in missing.message
    on_disk = [p for p in os.listdir(tmp_path) if p.endswith(".lce")]
    assert len(on_disk) == 3
    assert sum(os.path.getsize(tmp_path / p) - HEADER_SIZE for p in on_disk) == 300


def test_retention_by_age_and_expiry_mark_survives_restart(tmp_path):
    clock = Clock()
    store = open_store(tmp_path, clock, max_age_s=10)
    store.put(1, blob(1), capture_time_us=clock())
    clock.advance(6)
    store.put(2, blob(2), capture_time_us=clock())
    clock.advance(5)  # frame 1 is now 11 s old, frame 2 5 s
    assert store.get(1).status is LookupStatus.EXPIRED
    assert store.get(2).status is LookupStatus.FOUND
    clock.advance(6)
    assert store.sweep() == 1
    assert len(store) == 0
    reopened = open_store(tmp_path, clock, max_age_s=10)
    assert reopened.evicted_high_water == 2
    assert reopened.get(2).status is LookupStatus.EXPIRED
    assert reopened.get(3).status is LookupStatus.NOT_FOUND


def test_age_is_enforced_when_reopening(tmp_path):
    clock = Clock()
    open_store(tmp_path, clock, max_age_s=5).put(7, blob(7))
    clock.advance(30)
    store = open_store(tmp_path, clock, max_age_s=5)
    assert len(store) == 0 and store.get(7).status is LookupStatus.EXPIRED


def test_record_larger_than_budget_is_refused(tmp_path):
    store = open_store(tmp_path, max_bytes=1024)
    with pytest.raises(StorageFull):
        store.put(1, b"x" * 2000)
    with pytest.raises(StorageError, match="not stored"):
        store.get(1)  # a store error, not "not found"
    assert store.stats().put_errors == 1


def test_unwritable_directory_is_a_typed_error_and_the_store_goes_on(tmp_path):
    root = tmp_path / "store"
    store = open_store(root)
    store.put(1, blob(1))
    # Make the directory unusable for writing (works as root too): replace it by a file.
    for p in root.iterdir():
        p.unlink()
    root.rmdir()
    root.write_text("not a directory")
    with pytest.raises(StorageError, match="cannot write frame 2"):
        store.put(2, blob(2))
    root.unlink()
    root.mkdir()
    store.put(3, blob(3))
    assert store.get(3).data == blob(3)
    with pytest.raises(StorageError):
        store.get(2)


def test_disk_full_maps_to_storage_full(tmp_path, monkeypatch):
    store = open_store(tmp_path)
    real_open = open

    def full_open(path, mode="r", *a, **kw):
        if "w" in mode and ".tmp-" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *a, **kw)

    monkeypatch.setattr("builtins.open", full_open)
    with pytest.raises(StorageFull, match="disk full"):
        store.put(1, blob(1))
    monkeypatch.undo()
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_corrupt_file_is_a_store_error_not_data(tmp_path):
    store = open_store(tmp_path)
    store.put(5, blob(5))
    (path,) = [tmp_path / p for p in os.listdir(tmp_path) if p.endswith(".lce")]
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(StorageError, match="corrupt"):
        store.get(5)
    path.write_bytes(bytes(raw[: HEADER_SIZE + 10]))  # torn write
    with pytest.raises(StorageError, match="corrupt"):
        store.get(5)


def test_delete_is_not_expiry(tmp_path):
    store = open_store(tmp_path)
    store.put(4, blob(4))
    assert store.delete(4)
    assert store.get(4).status is LookupStatus.NOT_FOUND


def test_payload_passes_through_the_sealer(tmp_path):
    class XorSealer:
        sealer_id = 9

        def seal(self, data: bytes, aad: bytes) -> bytes:
            return bytes(b ^ 0x5A for b in data)

        def open(self, stored: bytes, aad: bytes) -> bytes:
            return bytes(b ^ 0x5A for b in stored)

    store = open_store(tmp_path, sealer=XorSealer())
    store.put(1, b"secret enhancement")
    assert b"secret" not in b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.suffix == ".lce")
    assert store.get(1).data == b"secret enhancement"
    with pytest.raises(StorageError, match="sealer"):
        open_store(tmp_path).get(1)  # a store without the key cannot read it
