"""Pictures as PNG bytes: previews and reconstructions (RGB), depth maps (16-bit gray) in a Result."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from layercast.shared.rpc import common_pb2


@dataclass(frozen=True)
class PngImage:
    png: bytes
    width: int
    height: int


def encode_png(image: np.ndarray) -> PngImage:
    """An RGB (HxWx3 uint8) or 16-bit gray (HxW uint16) array as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return PngImage(buf.getvalue(), int(image.shape[1]), int(image.shape[0]))


def depth_to_proto(depth: np.ndarray, encoding: str = "png16") -> common_pb2.DepthMap:
    """A float32 depth map (metres) as a DepthMap: 16-bit PNG with a per-frame scale, or float16."""
    d = np.nan_to_num(np.asarray(depth, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    d = np.maximum(d, 0.0)
    h, w = d.shape
    if encoding == "f16":
        data = d.astype("<f2").tobytes()
        return common_pb2.DepthMap(width=w, height=h, encoding="f16", data=data, scale=1.0)
    top = float(d.max()) if d.size else 0.0
    scale = top / 65535.0 if top > 0 else 1.0
    q = np.clip(np.rint(d / scale), 0, 65535).astype(np.uint16)
    return common_pb2.DepthMap(width=w, height=h, encoding="png16", data=encode_png(q).png, scale=scale)


def depth_from_proto(m: common_pb2.DepthMap) -> np.ndarray:
    """Inverse of :func:`depth_to_proto` (metres, float32)."""
    if m.encoding == "f16":
        return np.frombuffer(m.data, dtype="<f2").astype(np.float32).reshape(m.height, m.width)
    if m.encoding == "png16":
        arr = np.asarray(Image.open(io.BytesIO(m.data)), dtype=np.float32)
        return (arr * np.float32(m.scale)).reshape(m.height, m.width)
    raise ValueError(f"unknown depth encoding {m.encoding!r}")
