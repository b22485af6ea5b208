"""The outbox: base frames not yet acknowledged by the cloud, persisted in SQLite.

A frame enters with :meth:`Outbox.append` (which gives it its sequence number)
and leaves with :meth:`Outbox.ack` (the cloud stored it), :meth:`Outbox.reject`
(the cloud refused it; it is never resent) or the drop policy below.

Durability
    WAL journal with ``synchronous=FULL`` by default: each commit is fsynced,
    so an append, ack or sequence allocation survives a process kill *and* a
    power loss. ``NORMAL`` in WAL mode survives a process kill (the WAL is in
    the OS page cache) but may roll back the last commits on power loss. Power
    loss is a real event for a camera box, and rolling back the sequence
    counter would reuse sequence numbers the cloud has already stored (it
    would then deduplicate, i.e. silently discard, the new frames), so FULL is
    the default; the cost is one fsync per append / ack / send batch, small at
    camera frame rates. NORMAL remains available to spare flash wear.

Sequence numbers
    Start at 1, are allocated in the same transaction as the insert, persist in
    the ``counters`` table and never repeat, even when frames are dropped or
    the outbox is empty. :meth:`Outbox.advance_sequence` moves the counter past
    a sequence the cloud reports having stored (a wiped data directory).

In flight
    Which frames are on the wire is per stream, so it is kept in memory: after
    a reconnect (or restart) :meth:`Outbox.reset_in_flight` makes every
    unacknowledged frame sendable again, in sequence order. ``sent_count`` is
    persistent, so a frame sent before a restart is resent with ``resent=True``.

Drop policy (bounded by ``max_frames`` and ``max_bytes``)
    When an append would exceed a bound, the OLDEST frames that are not in
    flight are deleted until the new frame fits; frames in flight stay (they
    are on the wire and will be acked or resent). If that cannot make room (a
    frame larger than ``max_bytes``, or everything in flight) the NEW frame is
    dropped instead, after it got its sequence number. Every dropped frame
    increments the persistent ``dropped_frames`` / ``dropped_bytes`` counters,
    which the edge reports in heartbeats: nothing leaves the books silently.

Predicted frames (``predicted``: a P-frame is coded from the frame just before it)
    A predicted frame whose reference is dropped cannot be decoded, so it goes
    with it: a drop also deletes the queued predicted frames that follow it up
    to the next intra frame, and a new predicted frame whose reference was
    dropped is dropped at once, all counted under ``reference_dropped``. The
    cloud never receives a frame it must refuse, and every frame captured is
    delivered or counted as dropped. (The caller restarts the chain: the edge
    codes its next frame intra after any drop.)

Encryption at rest
    With a sealer (the edge's AES-256-GCM key, see ``layercast.edge.sealing``)
    each base frame is stored sealed, bound to its sequence number; ``size``
    counts the frame's own bytes. A base frame is the picture at preview
    quality, so it is covered like the enhancement layers. Rows written in the
    clear (before encryption was on) are sealed when the outbox opens; an
    outbox sealed under another key, or opened without its key, is refused
    (StorageError naming the key id). The database and its WAL files are 0600
    in a 0700 folder.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from layercast.edge.private_fs import private_dir, private_file
from layercast.edge.sealing import KEY_ID_BYTES, AesGcmSealer
from layercast.shared.errors import StorageError, StorageFull

_SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    sequence INTEGER PRIMARY KEY,
    capture_time_us INTEGER NOT NULL,
    base BLOB NOT NULL,
    size INTEGER NOT NULL,
    sent_count INTEGER NOT NULL DEFAULT 0,
    sealer INTEGER NOT NULL DEFAULT 0,
    predicted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

#: Persistent counters and their initial values.
COUNTERS = {
    "next_sequence": 1,
    "dropped_frames": 0,
    "dropped_bytes": 0,
    "rejected_frames": 0,
    "acked_frames": 0,
}

#: Reasons a frame leaves the outbox without an ack; each also counts in ``dropped_frames``
#: except ``rejected`` (the cloud refused the frame), which has its own counter.
DROP_REASONS = ("queue_full", "too_large", "capture_overflow", "encode_error", "reference_dropped")

#: How many recently dropped sequences are remembered to find a new frame's dropped reference.
_DROPPED_MEMORY = 1024


@dataclass(frozen=True)
class OutboxFrame:
    """A frame to send."""

    sequence: int
    capture_time_us: int
    base: bytes
    sent_count: int  # times sent on earlier streams (> 0 means "resent")

    @property
    def resent(self) -> bool:
        return self.sent_count > 0


@dataclass(frozen=True)
class AppendResult:
    """What :meth:`Outbox.append` did."""

    sequence: int  # the new frame's sequence number (allocated even if it was dropped)
    stored: bool  # False when the new frame itself was dropped
    dropped: tuple[int, ...] = ()  # sequences dropped by this append (may include ``sequence``)


@dataclass(frozen=True)
class OutboxStats:
    queued_frames: int
    queued_bytes: int
    in_flight: int
    next_sequence: int
    dropped_frames: int
    dropped_bytes: int
    rejected_frames: int
    acked_frames: int
    drops_by_reason: dict[str, int] = field(default_factory=dict)


class Outbox:
    """Persistent, bounded, ordered queue of unacknowledged base frames.

    Thread-safe (one lock around one connection); every method is a short
    blocking transaction, so asyncio callers run them with ``asyncio.to_thread``.
    Only one process may open a given file at a time (the edge app holds a lock
    on its data directory).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_frames: int = 10_000,
        max_bytes: int = 256 * 1024 * 1024,
        synchronous: str = "FULL",
        sealer: AesGcmSealer | None = None,
        predicted: Callable[[bytes], bool] | None = None,
    ) -> None:
        """``predicted(base)``: whether a frame is coded from the one before it (default: none is)."""
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.path = Path(path)
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.sealer = sealer
        self._predicted = predicted or (lambda _base: False)
        #: Sequences dropped lately (a predicted frame right after one of them is undecodable).
        self._dropped: set[int] = set()
        self._lock = threading.Lock()
        self._in_flight: set[int] = set()
        self._cursor = 0  # highest sequence marked in flight on the current stream
        try:
            private_dir(self.path.parent)
            for suffix in ("", "-wal", "-shm"):
                if suffix == "" or Path(f"{self.path}{suffix}").exists():
                    private_file(Path(f"{self.path}{suffix}"))
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(frames)")}
            if "sealer" not in columns:  # an outbox from before frames were sealed
                self._db.execute("ALTER TABLE frames ADD COLUMN sealer INTEGER NOT NULL DEFAULT 0")
            if "predicted" not in columns:  # an outbox from before predicted frames
                self._db.execute("ALTER TABLE frames ADD COLUMN predicted INTEGER NOT NULL DEFAULT 0")
            self._check_sealing()
            with self._tx():
                for name, value in COUNTERS.items():
                    self._db.execute(
                        "INSERT OR IGNORE INTO counters(name, value) VALUES (?, ?)", (name, value)
                    )
            row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM frames").fetchone()
        except (sqlite3.Error, OSError) as exc:
            raise _storage_error(self.path, "open", exc) from exc
        self._count, self._bytes = int(row[0]), int(row[1])

    # -- sealing ----------------------------------------------------------------------------------

    def _check_sealing(self) -> None:
        """Refuse rows this outbox cannot open; seal rows stored in the clear."""
        sealed = self._db.execute(
            "SELECT sequence, substr(base, 1, ?) FROM frames WHERE sealer != 0 LIMIT 1", (KEY_ID_BYTES,)
        ).fetchone()
        if sealed is not None and self.sealer is None:
            raise StorageError(
                f"outbox {self.path}: frames are encrypted under key {bytes(sealed[1]).hex()}, "
                'but no key is configured (store.encryption = "off")'
            )
        if self.sealer is None:
            return
        other = self._db.execute(
            "SELECT substr(base, 1, ?) FROM frames WHERE sealer != 0 AND substr(base, 1, ?) != ? LIMIT 1",
            (KEY_ID_BYTES, KEY_ID_BYTES, self.sealer.key_id),
        ).fetchone()
        if other is not None:
            raise StorageError(
                f"outbox {self.path}: frames are encrypted under key {bytes(other[0]).hex()}, "
                f"but this edge's key is {self.sealer.key_id.hex()} (store.encryption_key_file changed?)"
            )
        clear = self._db.execute("SELECT sequence, base FROM frames WHERE sealer = 0").fetchall()
        if clear:
            with self._tx():
                self._db.executemany(
                    "UPDATE frames SET base = ?, sealer = ? WHERE sequence = ?",
                    [(self._seal(int(q), bytes(b)), self.sealer.sealer_id, int(q)) for q, b in clear],
                )

    @staticmethod
    def _aad(sequence: int) -> bytes:
        return b"layercast outbox base v1\x00" + sequence.to_bytes(8, "big")

    def _seal(self, sequence: int, base: bytes) -> bytes:
        return base if self.sealer is None else self.sealer.seal(base, self._aad(sequence))

    def _frame(self, row: tuple) -> OutboxFrame:
        seq, t, stored, n, sealer_id = row
        seq, stored = int(seq), bytes(stored)
        if sealer_id:
            if self.sealer is None:
                raise StorageError(f"outbox {self.path}: frame {seq} is encrypted and no key is configured")
            stored = self.sealer.open(stored, self._aad(seq))
        return OutboxFrame(seq, int(t), stored, int(n))

    # -- plumbing ---------------------------------------------------------------------------------

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def _bump(self, name: str, delta: int) -> None:
        self._db.execute(
            "INSERT INTO counters(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, delta),
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- producing --------------------------------------------------------------------------------

    def append(
        self,
        capture_time_us: int,
        base: bytes,
        *,
        before_commit: Callable[[int], None] | None = None,
    ) -> AppendResult:
        """Store a new frame under the next sequence number, applying the drop policy.

        ``before_commit(sequence)`` runs inside the transaction when the frame is kept,
        before it becomes visible to senders: the edge stores the frame's enhancement
        there, so no request can arrive for a frame whose enhancement is not yet kept.
        An exception from it aborts the append (nothing is stored, no sequence used).
        """
        return self.append_many([(capture_time_us, base, before_commit)])[0]

    def append_many(
        self, frames: Sequence[tuple[int, bytes, Callable[[int], None] | None]]
    ) -> list[AppendResult]:
        """``append`` for several frames ``(capture_time_us, base, before_commit)`` in one transaction.

        One fsync for the lot: what a batch of encoded frames uses. All or nothing.
        """
        with self._lock:
            dropped = set(self._dropped)
            try:
                with self._tx():
                    seq = self._counter("next_sequence")
                    results = [self._append_one(seq + i, t, b, hook) for i, (t, b, hook) in enumerate(frames)]
                    self._db.execute(
                        "UPDATE counters SET value = ? WHERE name = 'next_sequence'", (seq + len(frames),)
                    )
            except BaseException as exc:
                self._reload_totals()  # the running totals counted rows that were rolled back
                self._dropped = dropped
                if isinstance(exc, sqlite3.Error):
                    raise _storage_error(self.path, "append to", exc) from exc
                raise
            return results

    def _append_one(
        self, seq: int, capture_time_us: int, base: bytes, before_commit: Callable[[int], None] | None
    ) -> AppendResult:
        """One frame inside an open transaction; keeps the running totals up to date."""
        size = len(base)
        predicted = bool(self._predicted(base))
        if predicted and seq - 1 in self._dropped:
            return self._drop_new(seq, "reference_dropped", size)
        if size > self.max_bytes:
            return self._drop_new(seq, "too_large", size)
        victims = self._victims(
            need_frames=self._count + 1 - self.max_frames,
            need_bytes=self._bytes + size - self.max_bytes,
        )
        if victims is None:
            return self._drop_new(seq, "queue_full", size)
        gone = [v for v, _ in victims]
        if victims:
            self._drop_rows(victims, "queue_full")
            gone += self._drop_dependents(max(gone))
        if predicted and seq - 1 in self._dropped:  # its reference was among them
            self._drop_new(seq, "reference_dropped", size)
            return AppendResult(seq, stored=False, dropped=(*gone, seq))
        self._db.execute(
            "INSERT INTO frames(sequence, capture_time_us, base, size, sealer, predicted) VALUES (?, ?, ?, ?, ?, ?)",
            (
                seq,
                capture_time_us,
                self._seal(seq, base),
                size,
                self.sealer.sealer_id if self.sealer else 0,
                int(predicted),
            ),
        )
        self._count += 1
        self._bytes += size
        if before_commit is not None:
            before_commit(seq)
        return AppendResult(seq, stored=True, dropped=tuple(gone))

    def _drop_new(self, seq: int, reason: str, size: int) -> AppendResult:
        """The new frame ``seq`` is not stored (counted under ``reason``)."""
        self._count_drop(reason, 1, size)
        self._remember_dropped([seq])
        return AppendResult(seq, stored=False, dropped=(seq,))

    def _drop_rows(self, rows: list[tuple[int, int]], reason: str) -> None:
        """Delete queued frames ``(sequence, size)``, counted under ``reason``."""
        freed = sum(s for _, s in rows)
        self._db.executemany("DELETE FROM frames WHERE sequence = ?", [(v,) for v, _ in rows])
        self._count_drop(reason, len(rows), freed)
        self._count -= len(rows)
        self._bytes -= freed
        self._remember_dropped([v for v, _ in rows])

    def _drop_dependents(self, after: int) -> list[int]:
        """Drop the queued predicted frames that follow the dropped frame ``after`` without a gap
        (each is coded from the one before it), up to the next intra frame; their sequences."""
        rows = self._db.execute(
            "SELECT sequence, size, predicted FROM frames WHERE sequence > ? ORDER BY sequence", (after,)
        )
        chain: list[tuple[int, int]] = []
        expect = after + 1
        for seq, size, predicted in rows:
            if int(seq) != expect or not predicted or int(seq) in self._in_flight:
                break
            chain.append((int(seq), int(size)))
            expect += 1
        if chain:
            self._drop_rows(chain, "reference_dropped")
        return [v for v, _ in chain]

    def _remember_dropped(self, seqs: Iterable[int]) -> None:
        self._dropped.update(seqs)
        if len(self._dropped) > _DROPPED_MEMORY:
            keep = sorted(self._dropped)[-_DROPPED_MEMORY // 2 :]
            self._dropped = set(keep)

    def _victims(self, need_frames: int, need_bytes: int) -> list[tuple[int, int]] | None:
        """Oldest frames not in flight whose removal satisfies both needs; None if impossible."""
        if need_frames <= 0 and need_bytes <= 0:
            return []
        chosen: list[tuple[int, int]] = []
        freed = 0
        rows = self._db.execute(
            "SELECT sequence, size FROM frames WHERE sequence > ? ORDER BY sequence", (self._cursor,)
        )
        for seq, size in rows:
            if seq in self._in_flight:
                continue
            chosen.append((int(seq), int(size)))
            freed += int(size)
            if len(chosen) >= need_frames and freed >= need_bytes:
                return chosen
        # Frames at or below the cursor that are no longer in flight cannot exist: the cursor
        # only passes frames that were marked in flight, and those leave by ack / reject.
        return None

    def _count_drop(self, reason: str, frames: int, nbytes: int) -> None:
        self._bump("dropped_frames", frames)
        self._bump("dropped_bytes", nbytes)
        self._bump(f"dropped:{reason}", frames)

    def record_drops(self, reason: str, frames: int = 1, nbytes: int = 0) -> None:
        """Count frames dropped before they reached the outbox (e.g. the capture queue overflowed)."""
        if reason not in DROP_REASONS:
            raise ValueError(f"unknown drop reason {reason!r}; expected one of {DROP_REASONS}")
        with self._lock:
            try:
                with self._tx():
                    self._count_drop(reason, frames, nbytes)
            except sqlite3.Error as exc:
                raise _storage_error(self.path, "update", exc) from exc

    def advance_sequence(self, at_least: int) -> bool:
        """Make the next sequence at least ``at_least``; True if the counter moved."""
        with self._lock:
            try:
                with self._tx():
                    if self._counter("next_sequence") >= at_least:
                        return False
                    self._db.execute(
                        "UPDATE counters SET value = ? WHERE name = 'next_sequence'", (at_least,)
                    )
                    return True
            except sqlite3.Error as exc:
                raise _storage_error(self.path, "update", exc) from exc

    # -- sending ----------------------------------------------------------------------------------

    def next_to_send(self, limit: int) -> list[OutboxFrame]:
        """Up to ``limit`` frames not in flight, in sequence order (does not mark them)."""
        if limit <= 0:
            return []
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT sequence, capture_time_us, base, sent_count, sealer FROM frames "
                    "WHERE sequence > ? ORDER BY sequence LIMIT ?",
                    (self._cursor, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise _storage_error(self.path, "read", exc) from exc
        return [self._frame(r) for r in rows]

    def mark_in_flight(self, sequences: Iterable[int]) -> None:
        """Record that these frames were written to the current stream (and count the send)."""
        seqs = sorted(set(sequences))
        if not seqs:
            return
        with self._lock:
            try:
                with self._tx():
                    self._db.executemany(
                        "UPDATE frames SET sent_count = sent_count + 1 WHERE sequence = ?",
                        [(s,) for s in seqs],
                    )
            except sqlite3.Error as exc:
                raise _storage_error(self.path, "update", exc) from exc
            self._in_flight.update(seqs)
            self._cursor = max(self._cursor, seqs[-1])

    def take(self, limit: int) -> list[OutboxFrame]:
        """Atomically pick up to ``limit`` sendable frames and mark them in flight.

        The frames carry their ``sent_count`` from before this send (so ``resent`` is
        right). Atomic with respect to ``append``: a frame cannot be dropped by the
        queue policy between being picked and being marked.
        """
        if limit <= 0:
            return []
        with self._lock:
            try:
                with self._tx():
                    rows = self._db.execute(
                        "SELECT sequence, capture_time_us, base, sent_count, sealer FROM frames "
                        "WHERE sequence > ? ORDER BY sequence LIMIT ?",
                        (self._cursor, limit),
                    ).fetchall()
                    self._db.executemany(
                        "UPDATE frames SET sent_count = sent_count + 1 WHERE sequence = ?",
                        [(r[0],) for r in rows],
                    )
            except sqlite3.Error as exc:
                raise _storage_error(self.path, "update", exc) from exc
            frames = [self._frame(r) for r in rows]
            if frames:
                self._in_flight.update(f.sequence for f in frames)
                self._cursor = max(self._cursor, frames[-1].sequence)
            return frames

    def discard(self, sequences: int | Iterable[int], reason: str) -> int:
        """Drop queued frames under the drop policy (e.g. too large for the cloud), and the queued
        predicted frames that depend on them; counted as dropped. Returns how many left."""
        if reason not in DROP_REASONS:
            raise ValueError(f"unknown drop reason {reason!r}; expected one of {DROP_REASONS}")
        seqs = [sequences] if isinstance(sequences, int) else list(sequences)
        with self._lock:
            dropped = set(self._dropped)
            try:
                with self._tx():
                    removed, freed = self._delete(seqs)
                    if removed:
                        self._count_drop(reason, removed, freed)
                    self._after_delete(seqs, removed, freed)
                    self._remember_dropped(seqs)
                    for s in sorted(seqs):
                        removed += len(self._drop_dependents(s))
            except sqlite3.Error as exc:
                self._reload_totals()
                self._dropped = dropped
                raise _storage_error(self.path, "delete from", exc) from exc
            return removed

    def reset_in_flight(self) -> None:
        """A new stream: nothing is in flight, every unacknowledged frame is sendable again."""
        with self._lock:
            self._in_flight.clear()
            self._cursor = 0

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def is_in_flight(self, sequence: int) -> bool:
        return sequence in self._in_flight

    # -- completion -------------------------------------------------------------------------------

    def ack(self, sequences: int | Iterable[int]) -> int:
        """The cloud stored these frames: delete them. Returns how many were still queued."""
        return self._remove(sequences, "acked_frames")

    def reject(self, sequences: int | Iterable[int]) -> int:
        """The cloud refused these frames: delete them, never to be resent, and count them."""
        return self._remove(sequences, "rejected_frames")

    def _remove(self, sequences: int | Iterable[int], counter: str) -> int:
        seqs = [sequences] if isinstance(sequences, int) else list(sequences)
        if not seqs:
            return 0
        with self._lock:
            try:
                with self._tx():
                    removed, freed = self._delete(seqs)
                    if removed:
                        self._bump(counter, removed)
            except sqlite3.Error as exc:
                raise _storage_error(self.path, "delete from", exc) from exc
            self._after_delete(seqs, removed, freed)
            return removed

    def _delete(self, seqs: list[int]) -> tuple[int, int]:
        removed = freed = 0
        for s in seqs:
            row = self._db.execute("DELETE FROM frames WHERE sequence = ? RETURNING size", (s,)).fetchone()
            if row is not None:
                removed += 1
                freed += int(row[0])
        return removed, freed

    def _after_delete(self, seqs: list[int], removed: int, freed: int) -> None:
        self._in_flight.difference_update(seqs)
        self._count -= removed
        self._bytes -= freed

    # -- reading ----------------------------------------------------------------------------------

    @property
    def next_sequence(self) -> int:
        with self._lock:
            return self._counter("next_sequence")

    def __len__(self) -> int:
        return self._count

    def sequences(self) -> list[int]:
        """Every queued sequence, in order (for tests and diagnostics)."""
        with self._lock:
            return [int(r[0]) for r in self._db.execute("SELECT sequence FROM frames ORDER BY sequence")]

    def stats(self) -> OutboxStats:
        with self._lock:
            try:
                counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
            except sqlite3.Error as exc:
                raise _storage_error(self.path, "read", exc) from exc
            return OutboxStats(
                queued_frames=self._count,
                queued_bytes=self._bytes,
                in_flight=len(self._in_flight),
                next_sequence=int(counters["next_sequence"]),
                dropped_frames=int(counters["dropped_frames"]),
                dropped_bytes=int(counters["dropped_bytes"]),
                rejected_frames=int(counters["rejected_frames"]),
                acked_frames=int(counters["acked_frames"]),
                drops_by_reason={
                    k.split(":", 1)[1]: int(v) for k, v in counters.items() if k.startswith("dropped:")
                },
            )

    def _reload_totals(self) -> None:
        try:
            row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM frames").fetchone()
            self._count, self._bytes = int(row[0]), int(row[1])
        except sqlite3.Error:
            pass


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")


def _storage_error(path: Path, action: str, exc: BaseException) -> StorageError:
    text = str(exc)
    cls = StorageFull if "full" in text.lower() else StorageError
    return cls(f"outbox {path}: cannot {action} the database: {text}")
