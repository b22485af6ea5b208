"""Every frame of a load run by its id (camera, sequence): captured, then answered or lost.

Loss is computed from ids, not from counts: a frame is lost when it was captured and has no
result, and the ledger says why when it knows (dropped by the edge's outbox, refused by the
cloud, or skipped: a later frame of the same camera was answered, and results arrive in
sequence order per camera, so an earlier one without a result will not come). Frames without a
result that are newer than the camera's last result are *outstanding* (queued at the edge or
in the cloud), not lost, until the run ends.

All methods run on the event loop (no locks).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

SKIPPED = "no result: a later frame of the same camera was answered"


@dataclass
class CameraBook:
    """One camera's frames."""

    pending: dict[int, int] = field(default_factory=dict)  # sequence -> capture time (µs), no result yet
    lost: dict[int, str] = field(default_factory=dict)  # sequence -> reason
    captured: int = 0
    results: int = 0
    last_result: int = 0  # highest sequence answered


@dataclass(frozen=True)
class LedgerTotals:
    captured: int
    results: int
    lost: int  # known lost (reasons) + skipped
    outstanding: int  # no result yet, newer than the camera's last result
    oldest_outstanding_us: int | None  # capture time of the oldest frame without a result
    duplicates: int
    unknown: int
    out_of_order: int
    lost_by_reason: dict[str, int]


class Ledger:
    """Frames by id, with the latency of each answered frame (capture → result received)."""

    def __init__(self) -> None:
        self.cameras: dict[str, CameraBook] = collections.defaultdict(CameraBook)
        self.duplicates = 0  # results for a frame already answered
        self.unknown = 0  # results for frames this run never captured
        self.out_of_order = 0  # results older than the camera's last result (the API promises order)
        self._latencies_ms: list[float] = []

    # -- events -----------------------------------------------------------------------------------

    def captured(self, camera: str, sequence: int, capture_us: int) -> None:
        book = self.cameras[camera]
        book.pending[sequence] = capture_us
        book.captured += 1

    def lost(self, camera: str, sequence: int, reason: str) -> None:
        """The frame will get no result (dropped, refused, discarded), for ``reason``."""
        book = self.cameras[camera]
        if book.pending.pop(sequence, None) is not None:
            book.lost[sequence] = reason

    def result(self, camera: str, sequence: int, received_us: int) -> None:
        book = self.cameras[camera]
        capture_us = book.pending.pop(sequence, None)
        if capture_us is None:
            if book.lost.pop(sequence, None) is not None:  # e.g. discarded after the cloud had stored it
                book.results += 1
            elif sequence <= book.last_result:
                self.duplicates += 1
            else:
                self.unknown += 1
            return
        if sequence < book.last_result:
            self.out_of_order += 1
        book.last_result = max(book.last_result, sequence)
        book.results += 1
        self._latencies_ms.append((received_us - capture_us) / 1000.0)

    # -- reading ----------------------------------------------------------------------------------

    def take_latencies(self) -> list[float]:
        """Latencies (ms) of the results recorded since the last call."""
        out, self._latencies_ms = self._latencies_ms, []
        return out

    def pending_ages_ms(self, now_us: int) -> list[float]:
        """Age of every frame still waiting for its result (outstanding, not skipped)."""
        return [
            (now_us - t) / 1000.0
            for book in self.cameras.values()
            for seq, t in book.pending.items()
            if seq > book.last_result
        ]

    def pending_total(self) -> int:
        return sum(len(b.pending) for b in self.cameras.values())

    def totals(self) -> LedgerTotals:
        reasons: collections.Counter[str] = collections.Counter()
        outstanding = 0
        oldest: int | None = None
        for book in self.cameras.values():
            reasons.update(book.lost.values())
            for seq, t in book.pending.items():
                if seq < book.last_result:
                    reasons[SKIPPED] += 1
                else:
                    outstanding += 1
                    oldest = t if oldest is None else min(oldest, t)
        return LedgerTotals(
            captured=sum(b.captured for b in self.cameras.values()),
            results=sum(b.results for b in self.cameras.values()),
            lost=sum(reasons.values()),
            outstanding=outstanding,
            oldest_outstanding_us=oldest,
            duplicates=self.duplicates,
            unknown=self.unknown,
            out_of_order=self.out_of_order,
            lost_by_reason=dict(reasons),
        )

    def unanswered(self) -> dict[str, list[int]]:
        """Camera -> sequences captured without a result (lost or outstanding), for the record."""
        out: dict[str, list[int]] = {}
        for cam, book in self.cameras.items():
            seqs = sorted([*book.pending, *book.lost])
            if seqs:
                out[cam] = seqs
        return out
