"""Results as the browser sees them: plain JSON, and depth maps as colour images.

Depth travels as a 16-bit PNG (``depth = value * scale`` metres) or float16; the
page shows it with the turbo colour map, near = red, far = blue, stretched
between the 2nd and 98th percentile of the frame (the range is sent with it).
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from layercast.shared.rpc import common_pb2


def result_json(result: common_pb2.Result, depth_range: tuple[float, float] | None = None) -> dict[str, Any]:
    """What the grid and the frame view draw: boxes, costs, timing, depth range."""
    latency_ms = (
        (result.processed_time_us - result.capture_time_us) / 1000.0
        if result.processed_time_us and result.capture_time_us
        else None
    )
    out: dict[str, Any] = {
        "camera_id": result.camera_id,
        "sequence": result.sequence,
        "capture_time_us": result.capture_time_us,
        "processed_time_us": result.processed_time_us,
        "latency_ms": round(latency_ms, 1) if latency_ms is not None and latency_ms >= 0 else None,
        "task": result.task,
        "model_id": result.model_id,
        "width": result.width,
        "height": result.height,
        "base_bytes": result.base_bytes,
        "base_bpp": round(float(result.base_bpp), 4),
        "boxes": [
            {
                "x1": round(b.x1, 1),
                "y1": round(b.y1, 1),
                "x2": round(b.x2, 1),
                "y2": round(b.y2, 1),
                "class_id": b.class_id,
                "class_name": b.class_name or f"class {b.class_id}",
                "score": round(b.score, 3),
            }
            for b in result.boxes
        ],
        "depth": None,
    }
    if result.HasField("depth"):
        d = result.depth
        out["depth"] = {"width": d.width, "height": d.height, "encoding": d.encoding}
        if depth_range is not None:
            out["depth"]["near_m"] = round(depth_range[0], 3)
            out["depth"]["far_m"] = round(depth_range[1], 3)
    return out


def depth_metres(depth: common_pb2.DepthMap) -> np.ndarray:
    """The depth map in metres, float32 (H, W)."""
    if depth.encoding == "png16":
        img = Image.open(io.BytesIO(depth.data))
        arr = np.asarray(img, dtype=np.float32)
        return arr * float(depth.scale or 1.0)
    if depth.encoding == "f16":
        arr = np.frombuffer(depth.data, dtype="<f2").astype(np.float32)
        if arr.size != depth.width * depth.height:
            raise ValueError(f"f16 depth has {arr.size} values for {depth.width}x{depth.height}")
        return arr.reshape(depth.height, depth.width) * float(depth.scale or 1.0)
    raise ValueError(f"unknown depth encoding {depth.encoding!r}")


def depth_range(metres: np.ndarray) -> tuple[float, float]:
    """(near, far) in metres: 2nd and 98th percentile of the finite values."""
    finite = metres[np.isfinite(metres)]
    if finite.size == 0:
        return 0.0, 1.0
    near, far = np.percentile(finite, [2, 98])
    if far - near < 1e-6:
        far = near + 1e-3
    return float(near), float(far)


@lru_cache(maxsize=1)
def _turbo_lut() -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["turbo"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def colourise_depth(metres: np.ndarray, near: float, far: float) -> bytes:
    """A PNG of the depth map in the turbo colour map (near = red, far = blue)."""
    t = np.clip((metres - near) / (far - near), 0.0, 1.0)
    t = np.where(np.isfinite(t), t, 1.0)
    idx = ((1.0 - t) * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(_turbo_lut()[idx]).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def depth_png(depth: common_pb2.DepthMap) -> tuple[bytes, tuple[float, float]]:
    """Colour PNG and the (near, far) range it was stretched to."""
    m = depth_metres(depth)
    rng = depth_range(m)
    return colourise_depth(m, *rng), rng
