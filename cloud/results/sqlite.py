"""The cloud's embedded store: frames, results and cameras in one SQLite file (WAL).

Frames are keyed by (camera, sequence); inserting one that is already there is
a no-op that says so, which is what makes resent frames idempotent. A frame is
*pending* until its result (or its rejection) is written, so frames acknowledged
before a crash are found again by :meth:`SqliteStore.pending_frames` and
processed after a restart. Results carry a cursor (an ever-increasing row id):
per camera, cursor order equals sequence order, which is what subscribers
resume on. Blocking: the servicers reach it through
:class:`~layercast.cloud.results.store.AsyncStore`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layercast.cloud.results.records import (
    MAX_SEQUENCE,
    CameraRecord,
    FrameMeta,
    FrameRecord,
    InsertOutcome,
    ReplayQuery,
    ResultRecord,
    RetentionReport,
    StoredResult,
)

if TYPE_CHECKING:
    from layercast.cloud.ingest.frame import Frame

PENDING, DONE, REJECTED = 0, 1, 2
_STATUS_NAMES = {PENDING: "pending", DONE: "done", REJECTED: "rejected"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cameras (
    camera_id TEXT PRIMARY KEY,
    base_model_id TEXT NOT NULL DEFAULT '',
    enhancement_model_id TEXT NOT NULL DEFAULT '',
    task TEXT NOT NULL DEFAULT '',
    first_seen_us INTEGER NOT NULL DEFAULT 0,
    last_seen_us INTEGER NOT NULL DEFAULT 0,
    last_sequence INTEGER NOT NULL DEFAULT 0      -- high-water mark, never decreases (retention keeps it)
);
CREATE TABLE IF NOT EXISTS frames (
    camera_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    capture_time_us INTEGER NOT NULL,
    received_us INTEGER NOT NULL,
    base BLOB NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    model_id TEXT NOT NULL,
    status INTEGER NOT NULL DEFAULT 0,            -- 0 pending, 1 done, 2 rejected
    reject_code INTEGER,
    reject_message TEXT,
    PRIMARY KEY (camera_id, sequence)
);
CREATE INDEX IF NOT EXISTS frames_pending ON frames (camera_id, sequence) WHERE status = 0;
CREATE INDEX IF NOT EXISTS frames_received ON frames (received_us);
CREATE TABLE IF NOT EXISTS results (
    cursor INTEGER PRIMARY KEY AUTOINCREMENT,     -- never reused, so resume cursors stay valid
    camera_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    processed_us INTEGER NOT NULL,
    result BLOB NOT NULL,                         -- a serialized layercast.v1.Result
    UNIQUE (camera_id, sequence)
);
"""
SCHEMA_VERSION = "1"


#: The query of :meth:`SqliteStore.results_after`. The camera filter and the resume points travel as
#: JSON parameters, so the statement's text is the same however many cameras a subscription names:
#: inlining them needed two SQL parameters per camera (SQLite caps the count per statement) and left
#: one large compiled statement per distinct count in the connection's statement cache (128 kept;
#: fuzzing with filters of thousands of cameras grew the process by 250 MB).
_RESULTS_AFTER = (
    "WITH points(camera_id, after) AS MATERIALIZED (SELECT key, value FROM json_each(?))"
    " SELECT r.cursor, r.camera_id, r.sequence, r.result FROM results r"
    " LEFT JOIN points p ON p.camera_id = r.camera_id"
    " WHERE r.cursor > ? AND (? IS NULL OR r.camera_id IN (SELECT value FROM json_each(?)))"
    " AND r.sequence > COALESCE(p.after, ?)"
    " ORDER BY r.cursor LIMIT ?"
)


#: How far back :meth:`SqliteStore.frame_chain` looks for a camera's intra frame.
MAX_CHAIN_FRAMES = 600


class SqliteStore:
    """Blocking SQLite implementation; one connection guarded by a lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a committed frame survives the process being killed (kill -9);
        # only a power loss may drop the last transactions.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
        )

    # -- helpers -----------------------------------------------------------------------------
    def _tx(self, fn: Any) -> Any:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return out

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    # -- cameras -----------------------------------------------------------------------------
    def register_camera(
        self, camera_id: str, *, base_model_id: str, enhancement_model_id: str, task: str, now_us: int
    ) -> CameraRecord:
        """Create or update a camera as it says hello; returns its record (with its high-water mark)."""

        def run(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO cameras(camera_id, base_model_id, enhancement_model_id, task, first_seen_us, last_seen_us)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(camera_id) DO UPDATE SET"
                " base_model_id=excluded.base_model_id, enhancement_model_id=excluded.enhancement_model_id,"
                " task=excluded.task, last_seen_us=excluded.last_seen_us",
                (camera_id, base_model_id, enhancement_model_id, task, now_us, now_us),
            )

        self._tx(run)
        rec = self.get_camera(camera_id)
        assert rec is not None
        return rec

    def touch_camera(self, camera_id: str, now_us: int) -> None:
        with self._lock:
            self._db.execute("UPDATE cameras SET last_seen_us=? WHERE camera_id=?", (now_us, camera_id))

    def get_camera(self, camera_id: str) -> CameraRecord | None:
        rows = self._cameras("WHERE c.camera_id = ?", (camera_id,))
        return rows[0] if rows else None

    def list_cameras(self) -> list[CameraRecord]:
        return self._cameras("", ())

    def _cameras(self, where: str, params: tuple[Any, ...]) -> list[CameraRecord]:
        rows = self._query(
            "SELECT c.camera_id, c.base_model_id, c.enhancement_model_id, c.task, c.first_seen_us,"
            " c.last_seen_us, c.last_sequence,"
            " (SELECT COUNT(*) FROM frames f WHERE f.camera_id = c.camera_id AND f.status != 2)"
            f" FROM cameras c {where} ORDER BY c.camera_id",
            params,
        )
        return [CameraRecord(*row) for row in rows]

    # -- frames ------------------------------------------------------------------------------
    def put_frame(self, frame: Frame) -> InsertOutcome:
        """Store a frame once (pending); a second insert of the same (camera, sequence) changes nothing."""
        if not 1 <= frame.sequence <= MAX_SEQUENCE:
            raise ValueError(f"sequence {frame.sequence} outside 1..{MAX_SEQUENCE}")

        def run(db: sqlite3.Connection) -> InsertOutcome:
            if db.execute(
                "SELECT 1 FROM frames WHERE camera_id=? AND sequence=?", (frame.camera_id, frame.sequence)
            ).fetchone():
                return InsertOutcome.DUPLICATE
            db.execute(
                "INSERT OR IGNORE INTO cameras(camera_id, first_seen_us, last_seen_us) VALUES (?, ?, ?)",
                (frame.camera_id, frame.received_us, frame.received_us),
            )
            (hwm,) = db.execute(
                "SELECT last_sequence FROM cameras WHERE camera_id=?", (frame.camera_id,)
            ).fetchone()
            if frame.sequence <= hwm:
                return InsertOutcome.STALE
            db.execute(
                "INSERT INTO frames(camera_id, sequence, capture_time_us, received_us, base, width, height, model_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    frame.camera_id,
                    frame.sequence,
                    frame.capture_time_us,
                    frame.received_us,
                    frame.data,
                    frame.width,
                    frame.height,
                    frame.model_id,
                ),
            )
            db.execute(
                "UPDATE cameras SET last_sequence=?, last_seen_us=MAX(last_seen_us, ?) WHERE camera_id=?",
                (frame.sequence, frame.received_us, frame.camera_id),
            )
            return InsertOutcome.NEW

        return self._tx(run)

    def get_frame(self, camera_id: str, sequence: int) -> FrameRecord | None:
        if not 1 <= sequence <= MAX_SEQUENCE:  # a uint64 from a request; SQLite integers are int64
            return None
        rows = self._query(
            f"SELECT {_FRAME_COLS}, base FROM frames WHERE camera_id=? AND sequence=?", (camera_id, sequence)
        )
        return _frame(rows[0], with_base=True) if rows else None

    def list_frames(self, camera_id: str, *, before_sequence: int = 0, limit: int = 100) -> list[FrameMeta]:
        """Frames not rejected, newest first; ``before_sequence`` 0 = from the newest."""
        if before_sequence > MAX_SEQUENCE:  # every stored sequence is below it (and SQLite stops at int64)
            before_sequence = 0
        rows = self._query(
            f"SELECT {_FRAME_COLS} FROM frames WHERE camera_id=? AND status != 2 AND (? = 0 OR sequence < ?)"
            " ORDER BY sequence DESC LIMIT ?",
            (camera_id, before_sequence, before_sequence, limit),
        )
        return [_frame(r, with_base=False) for r in rows]

    def frame_chain(
        self, camera_id: str, sequence: int, *, limit: int = MAX_CHAIN_FRAMES
    ) -> list[tuple[int, bytes]]:
        """The base bitstreams of ``camera_id`` from its last intra frame at or before ``sequence``
        up to ``sequence``, as (sequence, bytes) in sequence order; [] when no intra frame is among
        the newest ``limit`` of them. Safe to call from any thread (a decoder's worker)."""
        if not 1 <= sequence <= MAX_SEQUENCE:
            return []
        chain: list[tuple[int, bytes]] = []
        with self._lock:
            rows = self._db.execute(
                "SELECT sequence, base FROM frames WHERE camera_id=? AND sequence<=? ORDER BY sequence DESC LIMIT ?",
                (camera_id, sequence, limit),
            )
            for seq, base in rows:
                data = bytes(base)
                chain.append((seq, data))
                if data[3:4] == b"\x01":  # an intra base layer (LayerKind.BASE)
                    chain.reverse()
                    return chain
        return []

    def pending_frames(self, *, limit: int = 1000, after: tuple[str, int] | None = None) -> list[FrameRecord]:
        """Frames stored but neither processed nor rejected, ordered by (camera, sequence),
        starting after ``after`` (a (camera, sequence) pair) to page through them."""
        cam, seq = after if after is not None else ("", 0)
        rows = self._query(
            f"SELECT {_FRAME_COLS}, base FROM frames WHERE status = 0 AND (camera_id, sequence) > (?, ?)"
            " ORDER BY camera_id, sequence LIMIT ?",
            (cam, seq, limit),
        )
        return [_frame(r, with_base=True) for r in rows]

    def mark_rejected(self, camera_id: str, sequence: int, code: int, message: str) -> None:
        """The frame cannot be processed (e.g. its payload does not decode); it stays listed as rejected."""

        def run(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE frames SET status=2, reject_code=?, reject_message=? WHERE camera_id=? AND sequence=?",
                (code, message, camera_id, sequence),
            )

        self._tx(run)

    # -- results -----------------------------------------------------------------------------
    def put_results(self, results: Iterable[ResultRecord]) -> list[int]:
        """Write results (one transaction) and mark their frames done; returns their cursors.

        A result already stored for (camera, sequence) is kept and its cursor returned.
        """
        items = list(results)

        def run(db: sqlite3.Connection) -> list[int]:
            cursors = []
            for r in items:
                db.execute(
                    "INSERT OR IGNORE INTO results(camera_id, sequence, processed_us, result) VALUES (?, ?, ?, ?)",
                    (r.camera_id, r.sequence, r.processed_us, r.data),
                )
                (cursor,) = db.execute(
                    "SELECT cursor FROM results WHERE camera_id=? AND sequence=?", (r.camera_id, r.sequence)
                ).fetchone()
                cursors.append(cursor)
                db.execute(
                    "UPDATE frames SET status=1 WHERE camera_id=? AND sequence=? AND status=0",
                    (r.camera_id, r.sequence),
                )
            return cursors

        return self._tx(run)

    def get_result(self, camera_id: str, sequence: int) -> bytes | None:
        if not 1 <= sequence <= MAX_SEQUENCE:
            return None
        rows = self._query(
            "SELECT result FROM results WHERE camera_id=? AND sequence=?", (camera_id, sequence)
        )
        return rows[0][0] if rows else None

    def results_after(self, query: ReplayQuery) -> list[StoredResult]:
        """The stored results ``query`` asks for, ordered by cursor."""
        if query.cameras is not None and not query.cameras:
            return []
        points = {cam: min(int(seq), MAX_SEQUENCE) for cam, seq in query.resume_after.items()}
        filter_json = json.dumps(sorted(query.cameras)) if query.cameras is not None else None
        params = (
            json.dumps(points),
            query.cursor,
            filter_json,
            filter_json,
            min(query.default_after, MAX_SEQUENCE),
            query.limit,
        )
        return [StoredResult(*row) for row in self._query(_RESULTS_AFTER, params)]

    def last_cursor(self) -> int:
        rows = self._query("SELECT COALESCE(MAX(cursor), 0) FROM results")
        return int(rows[0][0])

    # -- retention ---------------------------------------------------------------------------
    def apply_retention(
        self, *, now_us: int, max_age_s: float, max_frames_per_camera: int
    ) -> RetentionReport:
        """Delete processed frames older than ``max_age_s`` or beyond the newest
        ``max_frames_per_camera`` of their camera, and the results of deleted frames.
        Pending frames are never deleted (they still owe a result)."""
        cutoff = now_us - int(max_age_s * 1e6)

        def run(db: sqlite3.Connection) -> RetentionReport:
            frames = db.execute(
                "DELETE FROM frames WHERE status != 0 AND received_us < ?", (cutoff,)
            ).rowcount
            for (camera_id,) in db.execute("SELECT camera_id FROM cameras").fetchall():
                row = db.execute(
                    "SELECT sequence FROM frames WHERE camera_id=? ORDER BY sequence DESC LIMIT 1 OFFSET ?",
                    (camera_id, max_frames_per_camera),
                ).fetchone()
                if row is not None:
                    frames += db.execute(
                        "DELETE FROM frames WHERE camera_id=? AND status != 0 AND sequence <= ?",
                        (camera_id, row[0]),
                    ).rowcount
            results = db.execute(
                "DELETE FROM results WHERE sequence < COALESCE("
                " (SELECT MIN(f.sequence) FROM frames f WHERE f.camera_id = results.camera_id), 9223372036854775807)"
            ).rowcount
            return RetentionReport(frames, results)

        return self._tx(run)

    def close(self) -> None:
        with self._lock:
            self._db.close()


_FRAME_COLS = (
    "camera_id, sequence, capture_time_us, received_us, length(base), width, height, model_id, status"
)


def _frame(row: tuple[Any, ...], *, with_base: bool) -> FrameMeta:
    fields = list(row[:9])
    fields[8] = _STATUS_NAMES[fields[8]]
    if with_base:
        return FrameRecord(*fields, base=row[9])
    return FrameMeta(*fields)
