"""What an operator is shown of a stored frame: its preview from the base layer alone, and its
full reconstruction once the camera has sent the enhancement layer. Blocking (torch): run on a
worker thread."""

from __future__ import annotations

from layercast.cloud.ingest.engine import InferenceEngine
from layercast.cloud.results.png import PngImage, encode_png


def preview_png(engine: InferenceEngine, base: bytes) -> PngImage:
    """The base-only preview (simple synthesis) as PNG."""
    return encode_png(engine.codec.preview(engine.decode_one(base)))


def reconstruct_png(engine: InferenceEngine, base: bytes, enhancement: bytes) -> PngImage:
    """The full reconstruction from base + enhancement as PNG (FrameMismatch if they differ)."""
    return encode_png(engine.codec.reconstruct(engine.decode_one(base), enhancement))
