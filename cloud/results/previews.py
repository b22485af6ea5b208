"""What an operator is shown of a stored frame: its preview from the base layer alone, and its
full reconstruction once the camera has sent the enhancement layer. Blocking (torch): run on a
worker thread.

A stored frame is named by its camera and sequence: a predicted frame's base decodes through the
camera's stored chain (:meth:`InferenceEngine.decode_stored`, with a cache of decoded frames);
without them ``base`` must be an intra frame."""

from __future__ import annotations

from typing import Any

from layercast.cloud.ingest.engine import InferenceEngine
from layercast.cloud.results.png import PngImage, encode_png


def _decoded(engine: InferenceEngine, base: bytes, camera_id: str | None, sequence: int) -> Any:
    if camera_id is None:
        return engine.decode_one(base)
    return engine.decode_stored(camera_id, sequence, base)


def preview_png(
    engine: InferenceEngine, base: bytes, *, camera_id: str | None = None, sequence: int = 0
) -> PngImage:
    """The base-only preview (simple synthesis) as PNG."""
    return encode_png(engine.codec.preview(_decoded(engine, base, camera_id, sequence)))


def reconstruct_png(
    engine: InferenceEngine,
    base: bytes,
    enhancement: bytes,
    *,
    camera_id: str | None = None,
    sequence: int = 0,
) -> PngImage:
    """The full reconstruction from base + enhancement as PNG (FrameMismatch if they differ)."""
    return encode_png(engine.codec.reconstruct(_decoded(engine, base, camera_id, sequence), enhancement))
