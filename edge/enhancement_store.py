"""The enhancement store: enhancement bitstreams kept at the edge, on disk, for a while.

One directory per camera; one file per frame, named ``{sequence:020d}-{created_us}.lce``
so the index is rebuilt at start from a directory listing. Each file is a
32-byte header and the payload::

    magic "LCEH" | version u8 | flags u8 | sealer u8 | reserved u8 |
    sequence u64 | created_us i64 | payload_len u32 | crc32(payload) u32 | payload

Retention is bounded by total bytes and by age. Frames are evicted oldest
(lowest sequence) first, before a new file is written, so the directory never
holds more than ``max_bytes`` of payload. The highest evicted sequence (the
"high-water mark") is persisted in ``evicted.hwm``, so a lookup tells a frame
that *expired* (at or below the mark) from one the store *never had*
(``NOT_FOUND``).

Files are written to a temporary name and renamed, without fsync: an
enhancement lost in a power cut is acceptable, a torn one is caught by the
length and CRC checks and reported as a store error, never served.

Encryption at rest: the payload passes through a :class:`Sealer`
(``seal(data, aad)`` / ``open(stored, aad)``) whose id is recorded in the
header; the associated data binds a payload to its camera and sequence.
:class:`~layercast.edge.sealing.AesGcmSealer` encrypts them (what the edge uses
unless ``store.encryption = "off"``); :class:`PlainSealer` stores the bytes as
they are. A file written by another sealer is refused saying which. The folder
is 0700 and every file 0600 (``layercast.edge.private_fs``).

Failures to write (disk full, directory unwritable) raise :class:`StorageFull`
/ :class:`StorageError`; the caller counts them and carries on sending base
frames. The failure is remembered, so a later request for that frame is
answered with a store error rather than "not found".
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from layercast.edge.private_fs import FILE_MODE, private_dir, private_opener
from layercast.shared.clock import now_us
from layercast.shared.errors import StorageError, StorageFull

log = logging.getLogger(__name__)

MAGIC = b"LCEH"
VERSION = 1
_HEADER = struct.Struct("<4sBBBBQqII")
HEADER_SIZE = _HEADER.size  # 32
_SUFFIX = ".lce"
_HWM_FILE = "evicted.hwm"
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_MAX_REMEMBERED_FAILURES = 4096


class Sealer(Protocol):
    """Transforms payloads on their way to and from disk (encryption at rest)."""

    #: Recorded in each file's header; 0 is reserved for :class:`PlainSealer`.
    sealer_id: int

    def seal(self, data: bytes, aad: bytes) -> bytes: ...

    def open(self, stored: bytes, aad: bytes) -> bytes:
        """Inverse of ``seal``; raises StorageError when the payload fails authentication."""
        ...


class PlainSealer:
    """No encryption: payloads are stored as given."""

    sealer_id = 0

    def seal(self, data: bytes, aad: bytes) -> bytes:
        return data

    def open(self, stored: bytes, aad: bytes) -> bytes:
        return stored


#: How files of each sealer id are described in errors.
SEALER_NAMES = {0: "without encryption", 1: "encrypted (AES-256-GCM)"}


def _sealed_as(sealer_id: int) -> str:
    return SEALER_NAMES.get(sealer_id, f"by an unknown sealer (id {sealer_id})")


class NotKept(StorageError):
    """This frame's enhancement could not be written when it was captured (a failure already counted)."""


class LookupStatus(enum.Enum):
    FOUND = "found"
    EXPIRED = "expired"  # the store had it; retention evicted it
    NOT_FOUND = "not_found"  # the store never had it


@dataclass(frozen=True)
class Lookup:
    """Outcome of :meth:`EnhancementStore.get`."""

    status: LookupStatus
    sequence: int
    data: bytes | None = None
    message: str = ""


@dataclass(frozen=True)
class StoreStats:
    frames: int
    bytes: int
    evicted_high_water: int
    evicted_frames: int  # since this process opened the store
    put_errors: int  # since this process opened the store


@dataclass
class _Entry:
    size: int  # payload bytes as stored (after sealing)
    created_us: int
    path: Path


def temp_name(sequence: int, pid: int) -> str:
    """Name of the file frame ``sequence`` is written to by process ``pid`` before its rename.

    Hidden (leading dot) and recognisable (``.tmp-``), so a start-up removes what a crash left.
    """
    return f".{sequence:020d}.tmp-{pid}"


class EnhancementStore:
    """Bounded on-disk map ``sequence -> enhancement bitstream`` for one camera. Thread-safe."""

    def __init__(
        self,
        root: str | Path,
        camera_id: str,
        *,
        max_bytes: int,
        max_age_s: float,
        sealer: Sealer | None = None,
        clock_us: Callable[[], int] = now_us,
    ) -> None:
        self.root = Path(root)
        self.camera_id = camera_id
        self.max_bytes = max_bytes
        self.max_age_us = int(max_age_s * 1_000_000)
        self.sealer: Sealer = sealer or PlainSealer()
        self._clock_us = clock_us
        self._lock = threading.Lock()
        self._index: OrderedDict[int, _Entry] = OrderedDict()  # ascending sequence
        self._bytes = 0
        self._hwm = 0
        self._failed: OrderedDict[int, str] = OrderedDict()
        self.evicted_frames = 0
        self.put_errors = 0
        try:
            private_dir(self.root)
            self._load()
        except OSError as exc:
            raise StorageError(f"enhancement store {self.root}: cannot open: {exc.strerror or exc}") from exc
        with self._lock:
            self._enforce(extra=0)

    # -- startup ----------------------------------------------------------------------------------

    def _load(self) -> None:
        found: list[tuple[int, _Entry]] = []
        for entry in os.scandir(self.root):
            name = entry.name
            if ".tmp-" in name:
                Path(entry.path).unlink(missing_ok=True)  # a write interrupted by a crash
                continue
            if not name.endswith(_SUFFIX):
                continue
            try:
                seq_s, created_s = name[: -len(_SUFFIX)].split("-")
                seq, created = int(seq_s), int(created_s)
                size = entry.stat().st_size - HEADER_SIZE
            except (ValueError, OSError):
                log.warning("enhancement store %s: ignoring unexpected file %s", self.root, name)
                continue
            os.chmod(entry.path, FILE_MODE)  # a store from before files were owner-only
            found.append((seq, _Entry(max(size, 0), created, Path(entry.path))))
        for seq, e in sorted(found, key=lambda t: t[0]):
            self._index[seq] = e
            self._bytes += e.size
        hwm_path = self.root / _HWM_FILE
        if hwm_path.exists():
            try:
                self._hwm = int(hwm_path.read_text().strip() or 0)
            except ValueError:
                log.warning(
                    "enhancement store %s: unreadable %s, expiry marks restart at 0", self.root, _HWM_FILE
                )

    # -- writing ----------------------------------------------------------------------------------

    def put(self, sequence: int, data: bytes, capture_time_us: int | None = None) -> None:
        """Keep ``data`` for ``sequence``; evicts old frames first. Raises StorageFull / StorageError."""
        created = self._clock_us() if capture_time_us is None else capture_time_us
        aad = self._aad(sequence)
        with self._lock:
            try:
                payload = self.sealer.seal(data, aad)
                if len(payload) > self.max_bytes:
                    raise StorageFull(
                        f"enhancement store {self.root}: frame {sequence} needs {len(payload)} bytes, "
                        f"more than the whole retention budget of {self.max_bytes}"
                    )
                old = self._index.pop(sequence, None)
                if old is not None:
                    self._bytes -= old.size
                    old.path.unlink(missing_ok=True)
                self._enforce(extra=len(payload))
                path = self._write(sequence, created, payload)
            except StorageError as exc:
                self._remember_failure(sequence, str(exc))
                raise
            entry = _Entry(len(payload), created, path)
            self._index[sequence] = entry
            if next(reversed(self._index)) != sequence:  # out of order (rare): keep ascending order
                self._index = OrderedDict(sorted(self._index.items()))
            self._bytes += entry.size
            self._failed.pop(sequence, None)

    def _write(self, sequence: int, created_us: int, payload: bytes) -> Path:
        header = _HEADER.pack(
            MAGIC,
            VERSION,
            0,
            self.sealer.sealer_id,
            0,
            sequence,
            created_us,
            len(payload),
            zlib.crc32(payload),
        )
        final = self.root / f"{sequence:020d}-{created_us}{_SUFFIX}"
        tmp = self.root / temp_name(sequence, os.getpid())
        try:
            with open(tmp, "wb", opener=private_opener) as f:
                f.write(header)
                f.write(payload)
            os.replace(tmp, final)
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            what = exc.strerror or str(exc)
            if exc.errno in _FULL_ERRNOS:
                raise StorageFull(
                    f"enhancement store {self.root}: disk full writing frame {sequence}: {what}"
                ) from exc
            raise StorageError(
                f"enhancement store {self.root}: cannot write frame {sequence}: {what}"
            ) from exc
        return final

    def _remember_failure(self, sequence: int, message: str) -> None:
        self.put_errors += 1
        self._failed[sequence] = message
        while len(self._failed) > _MAX_REMEMBERED_FAILURES:
            self._failed.popitem(last=False)

    def delete(self, sequence: int) -> bool:
        """Forget one frame without marking it expired (its base never left the edge)."""
        with self._lock:
            entry = self._index.pop(sequence, None)
            if entry is None:
                return False
            self._bytes -= entry.size
        entry.path.unlink(missing_ok=True)
        return True

    # -- retention --------------------------------------------------------------------------------

    def sweep(self) -> int:
        """Evict frames past the age limit (also done on every put); returns how many."""
        with self._lock:
            before = self.evicted_frames
            self._enforce(extra=0)
            return self.evicted_frames - before

    def _enforce(self, extra: int) -> None:
        """Evict oldest first until ``extra`` more bytes fit and nothing is too old. Holds the lock."""
        cutoff = self._clock_us() - self.max_age_us
        hwm = self._hwm
        while self._index:
            seq, entry = next(iter(self._index.items()))
            if self._bytes + extra <= self.max_bytes and entry.created_us >= cutoff:
                break
            self._index.popitem(last=False)
            self._bytes -= entry.size
            self.evicted_frames += 1
            hwm = max(hwm, seq)
            try:
                entry.path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("enhancement store %s: cannot remove %s: %s", self.root, entry.path, exc)
        if hwm != self._hwm:
            self._hwm = hwm
            self._save_hwm()

    def _save_hwm(self) -> None:
        tmp = self.root / f".{_HWM_FILE}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w", opener=private_opener) as f:
                f.write(f"{self._hwm}\n")
            os.replace(tmp, self.root / _HWM_FILE)
        except OSError as exc:  # not fatal: only the expired / not-found distinction degrades
            log.warning("enhancement store %s: cannot save the expiry mark: %s", self.root, exc)

    # -- reading ----------------------------------------------------------------------------------

    def get(self, sequence: int) -> Lookup:
        """FOUND with the bytes, EXPIRED, or NOT_FOUND; raises StorageError when the store fails."""
        with self._lock:
            entry = self._index.get(sequence)
            if entry is not None and entry.created_us < self._clock_us() - self.max_age_us:
                self._enforce(extra=0)
                entry = self._index.get(sequence)
            if entry is None:
                return self._missing(sequence)
        try:
            raw = entry.path.read_bytes()
        except FileNotFoundError:
            with self._lock:  # evicted between the lookup and the read
                return self._missing(sequence)
        except OSError as exc:
            raise StorageError(
                f"enhancement store {self.root}: cannot read frame {sequence}: {exc.strerror or exc}"
            ) from exc
        return Lookup(LookupStatus.FOUND, sequence, self._decode(sequence, raw))

    def _missing(self, sequence: int) -> Lookup:
        if sequence in self._failed:
            raise NotKept(f"enhancement of frame {sequence} was not stored: {self._failed[sequence]}")
        if sequence <= self._hwm:
            return Lookup(
                LookupStatus.EXPIRED,
                sequence,
                message=f"frame {sequence} is past the edge's retention window (frames up to {self._hwm} evicted)",
            )
        return Lookup(
            LookupStatus.NOT_FOUND, sequence, message=f"the edge has no enhancement for frame {sequence}"
        )

    def _decode(self, sequence: int, raw: bytes) -> bytes:
        def corrupt(why: str) -> StorageError:
            return StorageError(f"enhancement store {self.root}: frame {sequence} is corrupt on disk: {why}")

        if len(raw) < HEADER_SIZE:
            raise corrupt(f"{len(raw)} bytes, shorter than the header")
        magic, version, _flags, sealer_id, _r, seq, _created, length, crc = _HEADER.unpack_from(raw)
        if magic != MAGIC or version != VERSION:
            raise corrupt("bad magic or version")
        if seq != sequence:
            raise corrupt(f"header names frame {seq}")
        payload = raw[HEADER_SIZE:]
        if len(payload) != length or zlib.crc32(payload) != crc:
            raise corrupt("length or checksum mismatch (torn write?)")
        if sealer_id != self.sealer.sealer_id:
            raise StorageError(
                f"enhancement store {self.root}: frame {sequence} was stored {_sealed_as(sealer_id)}, but "
                f"this store is {_sealed_as(self.sealer.sealer_id)}: not served (it cannot be authenticated)"
            )
        try:
            return self.sealer.open(payload, self._aad(sequence))
        except StorageError as exc:
            raise StorageError(f"enhancement store {self.root}: frame {sequence}: {exc}") from None

    def _aad(self, sequence: int) -> bytes:
        return f"layercast-enh/{self.camera_id}/{sequence}".encode()

    # -- reporting --------------------------------------------------------------------------------

    @property
    def evicted_high_water(self) -> int:
        return self._hwm

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, sequence: object) -> bool:
        return sequence in self._index

    def stats(self) -> StoreStats:
        with self._lock:
            return StoreStats(len(self._index), self._bytes, self._hwm, self.evicted_frames, self.put_errors)
