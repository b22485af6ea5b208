"""What the store holds and hands back: frames read back, cameras, results, replay queries."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

#: Largest sequence number SQLite's signed 64-bit integers hold.
MAX_SEQUENCE = (1 << 63) - 1


class InsertOutcome(enum.Enum):
    """What :meth:`SqliteStore.put_frame` did."""

    NEW = "new"  # stored now; it must be processed
    DUPLICATE = "duplicate"  # already stored; acknowledge again, produce nothing
    STALE = "stale"  # not stored, and not after the camera's newest stored sequence


@dataclass(frozen=True)
class FrameMeta:
    """A stored frame without its bitstream."""

    camera_id: str
    sequence: int
    capture_time_us: int
    received_us: int
    base_size: int
    width: int
    height: int
    model_id: str
    status: str = "pending"

    @property
    def bpp(self) -> float:
        """Bits per pixel of the base bitstream."""
        return 8.0 * self.base_size / max(1, self.width * self.height)


@dataclass(frozen=True)
class FrameRecord(FrameMeta):
    """A stored frame read back with its base bitstream (not yet parsed: the configuration that
    checks it may have changed since it was stored)."""

    base: bytes = b""


@dataclass(frozen=True)
class CameraRecord:
    camera_id: str
    base_model_id: str
    enhancement_model_id: str
    task: str
    first_seen_us: int
    last_seen_us: int
    last_sequence: int  # newest sequence ever stored (0 if none)
    frames_stored: int


@dataclass(frozen=True)
class ResultRecord:
    """One result to write: ``data`` is a serialized ``layercast.v1.Result``."""

    camera_id: str
    sequence: int
    processed_us: int
    data: bytes


@dataclass(frozen=True)
class StoredResult:
    """A result read back, with the cursor to resume after it."""

    cursor: int
    camera_id: str
    sequence: int
    data: bytes


@dataclass(frozen=True)
class ReplayQuery:
    """A page of the results log a subscriber replays: results after ``cursor`` whose sequence is
    above their camera's resume point (``resume_after``: camera → last sequence seen; other
    cameras ``default_after``), of ``cameras`` only (None = all; empty = none), at most ``limit``,
    in log order (hence in sequence order per camera)."""

    cameras: frozenset[str] | None = None
    resume_after: Mapping[str, int] = field(default_factory=dict)
    default_after: int = 0
    cursor: int = 0
    limit: int = 500

    def after(self, camera_id: str) -> int:
        """The last sequence of ``camera_id`` already seen."""
        return self.resume_after.get(camera_id, self.default_after)


@dataclass(frozen=True)
class RetentionReport:
    frames_deleted: int
    results_deleted: int
