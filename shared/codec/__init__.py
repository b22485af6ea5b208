"""The scalable, task-compatible learned image codec (de Andrade & Bajić)."""

from layercast.shared.codec import _compressai  # noqa: F401  (first: registers CompressAI lightly)
from layercast.shared.codec.api import DecodedBase, EncodedFrame, ScalableCodec, load_codec
from layercast.shared.codec.bitstream import Header, LayerKind, parse_header

__all__ = [
    "DecodedBase",
    "EncodedFrame",
    "Header",
    "LayerKind",
    "ScalableCodec",
    "load_codec",
    "parse_header",
]
