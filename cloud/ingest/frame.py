"""One frame on its way through the cloud, and what the cloud tells its camera about it.

A :class:`Frame` is built once, when a camera's BaseFrame arrives (or when a stored frame is
recovered at start-up): its header is parsed and checked then, and that same record is stored,
queued in the batcher (keyed by camera, so one camera's frames stay in sequence order), decoded
and turned into a result. Nothing downstream parses the header again.

The pipeline answers in :data:`FrameEvent` values; only the EdgeLink servicer turns them into
protobuf messages. Status codes are ``grpc.StatusCode`` from where they arise to the servicer.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from layercast.shared.codec.bitstream import Bitstream, Header


@dataclass(frozen=True)
class Frame:
    """A base-layer frame of one camera, its header parsed and checked."""

    camera_id: str
    sequence: int  # 1, 2, ... per camera; 0 for a one-off Analytics.Infer image
    capture_time_us: int
    received_us: int
    bitstream: Bitstream  # parsed header and the bytes as the camera sent them

    @property
    def header(self) -> Header:
        return self.bitstream.header

    @property
    def data(self) -> bytes:
        return self.bitstream.data

    @property
    def width(self) -> int:
        return self.header.width

    @property
    def height(self) -> int:
        return self.header.height

    @property
    def model_id(self) -> str:
        return self.header.model_id

    @property
    def nbytes(self) -> int:
        return len(self.bitstream.data)

    @property
    def key(self) -> tuple[str, int]:
        """(camera, sequence): what a frame is stored under and decoded in the order of."""
        return self.camera_id, self.sequence


# -- what the cloud says about a frame (the servicer turns each into a CloudMessage) ----------------


@dataclass(frozen=True)
class Acked:
    """The frame is durably stored (``duplicate``: it already was; nothing more comes of it)."""

    sequence: int
    duplicate: bool = False


@dataclass(frozen=True)
class Rejected:
    """The frame was refused before storing, or it failed to decode after its Ack."""

    sequence: int
    code: grpc.StatusCode
    message: str


@dataclass(frozen=True)
class CreditsBack:
    """The cloud is done with ``count`` frames: the camera may send that many more."""

    count: int


#: Why the cloud asks a camera for an intra frame (``IntraRequest.Reason`` names).
INTRA_REASONS = ("NO_REFERENCE", "REFERENCE_MISMATCH", "DECODE_FAILED")


@dataclass(frozen=True)
class IntraNeeded:
    """The cloud cannot decode the camera's next predicted frame: its next frame must be intra.
    ``sequence`` is the frame that could not be decoded (0: none yet, at the start of a stream)."""

    camera_id: str
    sequence: int
    reason: str  # one of INTRA_REASONS
    message: str


FrameEvent = Acked | Rejected | CreditsBack | IntraNeeded
