"""A camera's base layers as a low-delay video: intra frames, then P-frames against the previous one.

:class:`VideoEncoder` (edge, one per camera) and :class:`VideoDecoder` (cloud, one per camera) keep
the one piece of state a P-frame needs: the previous frame's decoded base (its ŷ_b and the CRC32 of
its bitstream, which every P-frame header names). Encoder and decoder hold the *same* ŷ_b: the
encoder keeps what ``compress`` returned, which is bit-identical to what the decoder decodes.

* An intra frame starts the stream, follows every ``intra_period`` frames (a GOP; default 2 s at the
  camera's rate) and is sent at once after :meth:`VideoEncoder.request_intra` (a decoder that lost
  its reference asks for one).
* The decoder refuses a P-frame whose reference it does not hold (after a restart, a gap, a frame
  that failed) with :class:`~layercast.shared.errors.ReferenceMismatch`, and never decodes it
  against another frame; it then waits for an intra frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from layercast.shared.codec.api import DecodedBase, EncodedFrame, ScalableCodec
from layercast.shared.codec.bitstream import LayerKind
from layercast.shared.errors import LayercastError

#: Default intra period in seconds of video.
DEFAULT_INTRA_SECONDS = 2.0


def intra_period_for(fps: float, seconds: float = DEFAULT_INTRA_SECONDS) -> int:
    """Frames between intra frames for a camera at ``fps`` (at least 1: all intra)."""
    return max(1, round(fps * seconds))


class VideoEncoder:
    """Per-camera encoder state: the reference and the intra schedule."""

    def __init__(self, codec: ScalableCodec, intra_period: int = 20) -> None:
        if intra_period < 1:
            raise ValueError(f"intra_period must be at least 1, got {intra_period}")
        self.codec = codec
        self.intra_period = intra_period
        self.reference: DecodedBase | None = None
        self._since_intra = 0
        self._intra_requested = True

    @property
    def predicts(self) -> bool:
        """Whether this encoder can code P-frames at all (the codec has a temporal model)."""
        return self.codec.temporal is not None and self.intra_period > 1

    def request_intra(self) -> None:
        """Make the next frame an intra frame."""
        self._intra_requested = True

    def next_is_intra(self) -> bool:
        return (
            not self.predicts
            or self._intra_requested
            or self.reference is None
            or self._since_intra >= self.intra_period
        )

    def reference_for(self, image: np.ndarray) -> DecodedBase | None:
        """The reference the next frame is coded against (None: intra)."""
        if self.next_is_intra() or self.reference is None or self.reference.size != image.shape[:2]:
            return None
        return self.reference

    def update(self, frame: EncodedFrame) -> None:
        """Record a frame coded with :meth:`reference_for`'s reference as the next reference."""
        self.reference = frame.decoded
        if frame.kind is LayerKind.BASE:
            self._since_intra = 1
            self._intra_requested = False
        else:
            self._since_intra += 1

    def encode(self, image: np.ndarray, layers: str = "all") -> EncodedFrame:
        frame = self.codec.encode(image, layers, reference=self.reference_for(image))
        self.update(frame)
        return frame


@dataclass
class VideoDecoder:
    """Per-camera decoder state: the last decoded base (the next P-frame's reference)."""

    codec: ScalableCodec
    reference: DecodedBase | None = None

    @property
    def reference_crc(self) -> int | None:
        return None if self.reference is None else self.reference.frame_ref

    def reset(self) -> None:
        """Forget the reference (after a gap or a failure): only an intra frame decodes next."""
        self.reference = None

    def decode(self, data: bytes) -> DecodedBase:
        """Decode the next frame; a failure forgets the reference (the stream needs an intra frame)."""
        try:
            dec = self.codec.decode_base(data, reference=self.reference)
        except LayercastError:  # ReferenceMismatch included
            self.reference = None
            raise
        self.reference = dec
        return dec
