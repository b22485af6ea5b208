"""Counters of one edge process, in one place.

Every component records through the ``record_*`` methods of one
:class:`EdgeStats`, so Prometheus metrics (issue 6) can be added by
subclassing it (or reading its attributes from a collector) without touching
the pipeline. Counters are per process; the outbox keeps the persistent ones
(dropped, rejected, acked) across restarts.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class EdgeStats:
    frames_captured: int = 0
    frames_dropped_capture: int = 0  # captured but dropped before encoding (encoder behind)
    frames_encoded: int = 0
    frames_intra: int = 0  # of which intra base layers
    frames_predicted: int = 0  # of which predicted base layers (P-frames)
    intra_requests: int = 0  # the cloud asked for an intra frame
    encode_batches: int = 0
    encode_seconds: float = 0.0
    frames_encode_failed: int = 0  # captured frames lost to an encoder error
    base_bytes_encoded: int = 0
    enhancement_bytes_stored: int = 0
    frames_queued: int = 0  # appended to the outbox
    frames_dropped_outbox: int = 0  # dropped by the outbox policy (queue full, too large)
    frames_sent: int = 0  # writes of a frame to a stream, resends included
    frames_resent: int = 0  # of which resends (resent=true)
    base_bytes_sent: int = 0
    frames_acked: int = 0
    frames_acked_duplicate: int = 0
    frames_rejected: int = 0
    frames_too_large: int = 0  # larger than the cloud's max_frame_bytes: never sent, counted as dropped
    sequence_collisions: int = 0  # duplicate acks for frames never sent before (see link.py)
    store_errors: int = 0  # enhancement store failures (the base stream went on)
    store_healthy: bool = True  # False from a store failure until the next enhancement is kept
    outbox_errors: int = 0  # outbox write failures
    frames_lost_outbox_error: int = 0  # encoded frames that could not be persisted (counted here only)
    enhancement_requests: int = 0
    enhancement_served: int = 0
    enhancement_bytes_served: int = 0
    enhancement_unavailable: dict[str, int] = field(default_factory=dict)  # by reason
    heartbeats_sent: int = 0
    connects: int = 0  # streams welcomed
    reconnects: int = 0  # connection attempts after the first
    disconnects: int = 0
    connected: bool = False
    last_error: str = ""
    last_disconnect: str = ""
    started_at: float = field(default_factory=time.time)

    def record_capture(self, dropped: int = 0) -> None:
        self.frames_captured += 1
        self.frames_dropped_capture += dropped

    def record_encode(self, frames: int, seconds: float, base_bytes: int) -> None:
        self.frames_encoded += frames
        self.encode_batches += 1
        self.encode_seconds += seconds
        self.base_bytes_encoded += base_bytes

    def record_encode_error(self, frames: int, message: str) -> None:
        self.frames_encode_failed += frames
        self.last_error = message

    def record_frame_size(self, pixels: int, base_bytes: int, enhancement_bytes: int) -> None:
        """One encoded frame's sizes; no counter here (edge/metrics.py keeps the bits-per-pixel histogram)."""

    def record_queued(self, stored: bool, dropped: int) -> None:
        self.frames_queued += int(stored)
        self.frames_dropped_outbox += dropped

    def record_stored(self, nbytes: int) -> None:
        self.enhancement_bytes_stored += nbytes
        self.store_healthy = True

    def record_store_error(self, message: str) -> None:
        self.store_errors += 1
        self.store_healthy = False
        self.last_error = message

    def record_outbox_error(self, frames: int, message: str) -> None:
        self.outbox_errors += 1
        self.frames_lost_outbox_error += frames
        self.last_error = message

    def record_sent(self, nbytes: int, resent: bool) -> None:
        self.frames_sent += 1
        self.frames_resent += int(resent)
        self.base_bytes_sent += nbytes

    def record_ack(self, duplicate: bool) -> None:
        self.frames_acked += 1
        self.frames_acked_duplicate += int(duplicate)

    def record_rejected(self) -> None:
        self.frames_rejected += 1

    def record_too_large(self) -> None:
        self.frames_too_large += 1

    def record_enhancement(self, outcome: str, nbytes: int = 0) -> None:
        """``outcome``: "served" or an unavailability reason ("expired", "not_found", "store_error")."""
        self.enhancement_requests += 1
        if outcome == "served":
            self.enhancement_served += 1
            self.enhancement_bytes_served += nbytes
        else:
            self.enhancement_unavailable[outcome] = self.enhancement_unavailable.get(outcome, 0) + 1

    def record_heartbeat(self) -> None:
        self.heartbeats_sent += 1

    def record_connected(self) -> None:
        self.connects += 1
        self.connected = True

    def record_disconnected(self, reason: str, error: bool = True) -> None:
        """The stream ended; ``error`` is False for a requested stop."""
        if self.connected:
            self.disconnects += 1
        self.connected = False
        self.last_disconnect = reason
        if error:
            self.last_error = reason

    def record_reconnect_attempt(self) -> None:
        self.reconnects += 1

    def snapshot(self) -> dict[str, Any]:
        """A plain dict copy (for logs, JSON and tests)."""
        return dataclasses.asdict(self)
