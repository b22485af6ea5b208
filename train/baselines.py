"""Conventional image-codec baselines (JPEG, WebP, AVIF) through Pillow.

The evaluation encodes every test image at each quality of a sweep, counts the
real file bytes, decodes, and runs the same task models on the decoded image::

    for q in default_qualities("avif"):
        coded = roundtrip(image, "avif", q)        # coded.num_bytes, coded.bpp, coded.decoded (uint8 HxWx3)

Settings are fixed and written down so curves are reproducible: JPEG baseline
Huffman-optimised 4:2:0; WebP lossy ``method=6`` (slowest, smallest); AVIF
(libavif through Pillow >= 11) 4:2:0, ``speed=6``, one thread. Files carry no
metadata beyond what the format requires, and every byte is counted.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image, features

from layercast.shared.errors import InvalidImage

Codec = Literal["jpeg", "webp", "avif"]
CODECS: tuple[Codec, ...] = ("jpeg", "webp", "avif")

_PIL_FORMAT = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}
_FEATURE = {"jpeg": "jpg", "webp": "webp", "avif": "avif"}
_OPTIONS: dict[str, dict[str, Any]] = {
    "jpeg": {"optimize": True, "subsampling": 2, "progressive": False},
    "webp": {"method": 6, "lossless": False},
    "avif": {"subsampling": "4:2:0", "speed": 6, "max_threads": 1},
}
#: Quality sweeps spanning each codec's useful range on small images, down to each encoder's
#: lowest setting so a curve reaches as far down in rate as the format can go (on the 256×192 test
#: images: JPEG q=1 ≈ 0.137 bpp, WebP q=0 ≈ 0.126, AVIF q=0 ≈ 0.130; headers and tables set the floor).
_QUALITIES: dict[str, tuple[int, ...]] = {
    "jpeg": (1, 5, 10, 20, 30, 50, 70, 90),
    "webp": (0, 5, 10, 20, 30, 50, 70, 90),
    "avif": (0, 5, 10, 20, 30, 50, 70, 90),
}


@dataclass(frozen=True)
class Coded:
    """One image coded by a baseline codec at one quality."""

    codec: Codec
    quality: int
    data: bytes
    decoded: np.ndarray  # uint8 HxWx3

    @property
    def num_bytes(self) -> int:
        return len(self.data)

    @property
    def bpp(self) -> float:
        """Bits per pixel of the real file: ``8 · bytes / (H · W)``."""
        h, w = self.decoded.shape[:2]
        return 8.0 * len(self.data) / (h * w)


def codec_available(codec: str) -> bool:
    """Whether this Pillow build can write ``codec``."""
    return codec in _FEATURE and bool(features.check(_FEATURE[codec]))


def available_codecs() -> list[Codec]:
    """The baseline codecs this Pillow build supports, in the order of ``CODECS``."""
    return [c for c in CODECS if codec_available(c)]


def default_qualities(codec: Codec) -> tuple[int, ...]:
    """The quality sweep used by the evaluation for ``codec``."""
    _check_codec(codec)
    return _QUALITIES[codec]


def _check_codec(codec: str) -> None:
    if codec not in _PIL_FORMAT:
        raise ValueError(f"unknown baseline codec {codec!r}; expected one of {', '.join(CODECS)}")
    if not codec_available(codec):
        hint = " (install pillow-avif-plugin or a Pillow built with libavif)" if codec == "avif" else ""
        raise RuntimeError(f"this Pillow build cannot encode {codec}{hint}")


def encode(image: np.ndarray, codec: Codec, quality: int) -> bytes:
    """Encode an RGB uint8 (H, W, 3) image; returns the complete file bytes."""
    _check_codec(codec)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise InvalidImage(
            f"baseline input must be uint8 (H, W, 3), got {getattr(image, 'dtype', type(image))} {shape}"
        )
    if not 0 <= int(quality) <= 100:
        raise ValueError(f"quality must be in 0..100, got {quality}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(
        buf, format=_PIL_FORMAT[codec], quality=int(quality), **_OPTIONS[codec]
    )
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    """Decode JPEG / WebP / AVIF bytes into an RGB uint8 (H, W, 3) array."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Exception as exc:  # PIL raises several unrelated types for bad input
        raise InvalidImage(f"cannot decode baseline image ({len(data)} bytes): {exc}") from exc


def from_file(data: bytes, codec: Codec, quality: int, shape: tuple[int, ...]) -> Coded:
    """A file made earlier, decoded; it must decode to ``shape`` (the original image's)."""
    decoded = decode(data)
    if decoded.shape != tuple(shape):
        raise InvalidImage(f"{codec} decoded to {decoded.shape}, expected {tuple(shape)}")
    return Coded(codec, int(quality), data, decoded)


def roundtrip(image: np.ndarray, codec: Codec, quality: int) -> Coded:
    """Encode then decode ``image``; the decoded image has the input's size."""
    return from_file(encode(image, codec, quality), codec, quality, image.shape)


def sweep(image: np.ndarray, codec: Codec, qualities: tuple[int, ...] | None = None) -> list[Coded]:
    """``roundtrip`` at each quality of ``qualities`` (default: ``default_qualities(codec)``)."""
    return [roundtrip(image, codec, q) for q in (qualities or default_qualities(codec))]
