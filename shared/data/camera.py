"""Pinhole camera of the synthetic scenes and the Cityscapes disparity conventions.

Camera model (used by the renderer and written next to every Cityscapes-layout image):

* a pinhole with square pixels, focal length ``f`` in pixels, principal point ``(cx, cy)``;
* optical axis horizontal (zero pitch and roll), so the horizon is the image row ``cy``;
* the camera is ``height`` metres above a flat ground plane;
* world axes: ``X`` right, ``Y`` up from the ground, ``Z`` forward along the optical axis.

A world point ``(X, Y, Z)`` projects to ``u = cx + f X / Z`` and ``v = cy + f (height - Y) / Z``; a ground
pixel of row ``v > cy`` lies at depth ``Z = f * height / (v - cy)``. "Depth" everywhere is ``Z`` (distance
along the optical axis, as for Cityscapes' stereo depth), in metres.

The stereo rig is Cityscapes': baseline 0.209313 m and focal 2262.52 px at 2048 px width. At another
width the focal scales with it (``f = 2262.52 * width / 2048``), which keeps the field of view of
Cityscapes, so disparity in pixels is ``d = baseline * f / Z``. Cityscapes stores disparity as a
16-bit PNG with ``p = d * 256 + 1`` and ``p = 0`` for invalid pixels; it is read back as
``d = (p - 1) / 256`` for ``p > 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Cityscapes stereo baseline in metres.
CITYSCAPES_BASELINE = 0.209313
#: Cityscapes focal length in pixels at its native width.
CITYSCAPES_FOCAL = 2262.52
#: Cityscapes native image width in pixels.
CITYSCAPES_WIDTH = 2048


def cityscapes_focal(width: int) -> float:
    """Cityscapes' focal length scaled to an image ``width`` pixels wide."""
    return CITYSCAPES_FOCAL * width / CITYSCAPES_WIDTH


@dataclass(frozen=True)
class PinholeCamera:
    """A level pinhole camera above a flat ground (see the module docstring for the model)."""

    width: int
    height_px: int
    focal: float
    cx: float
    cy: float
    height: float
    baseline: float = CITYSCAPES_BASELINE

    @classmethod
    def cityscapes_like(
        cls, width: int, height_px: int, *, horizon: float | None = None, height: float = 1.4
    ) -> PinholeCamera:
        """A camera with Cityscapes' scaled focal, the horizon at row ``horizon`` (default 0.45 H)."""
        cy = 0.45 * height_px if horizon is None else float(horizon)
        return cls(width, height_px, cityscapes_focal(width), width / 2.0, cy, float(height))

    def ground_depth(self, v: np.ndarray) -> np.ndarray:
        """Depth in metres of the ground seen at rows ``v`` (inf at or above the horizon)."""
        dv = np.asarray(v, dtype=np.float64) - self.cy
        with np.errstate(divide="ignore"):
            return np.where(dv > 0, self.focal * self.height / np.maximum(dv, 1e-9), np.inf)

    def ground_row(self, z: np.ndarray | float) -> np.ndarray | float:
        """Image row of the ground point at depth ``z``."""
        return self.cy + self.focal * self.height / z

    def project(self, x: float, y: float, z: float) -> tuple[float, float]:
        """Pixel ``(u, v)`` of the world point ``(x, y, z)``."""
        return self.cx + self.focal * x / z, self.cy + self.focal * (self.height - y) / z

    def to_cityscapes_json(self) -> dict[str, dict[str, float]]:
        """This camera in the layout of Cityscapes' ``*_camera.json`` files."""
        return {
            "extrinsic": {
                "baseline": self.baseline,
                "pitch": 0.0,
                "roll": 0.0,
                "x": 0.0,
                "y": 0.0,
                "yaw": 0.0,
                "z": self.height,
            },
            "intrinsic": {"fx": self.focal, "fy": self.focal, "u0": self.cx, "v0": self.cy},
        }


def depth_to_disparity(depth: np.ndarray, baseline: float, focal: float) -> np.ndarray:
    """Disparity in pixels ``baseline * focal / depth``; 0 where depth is 0 (invalid) or not finite."""
    depth = np.asarray(depth, dtype=np.float32)
    valid = (depth > 0) & np.isfinite(depth)
    out = np.zeros_like(depth)
    out[valid] = np.float32(baseline * focal) / depth[valid]
    return out


def disparity_to_depth(disparity: np.ndarray, baseline: float, focal: float) -> np.ndarray:
    """Depth in metres ``baseline * focal / disparity``; 0 where the disparity is 0 (invalid)."""
    disparity = np.asarray(disparity, dtype=np.float32)
    valid = disparity > 0
    out = np.zeros_like(disparity)
    out[valid] = np.float32(baseline * focal) / disparity[valid]
    return out


def encode_disparity_png(disparity: np.ndarray) -> np.ndarray:
    """Cityscapes' 16-bit encoding: ``p = round(d * 256) + 1`` for ``d > 0``, ``p = 0`` for invalid.

    Disparities too large for 16 bits are clipped to 65535.
    """
    d = np.asarray(disparity, dtype=np.float64)
    p = np.where(d > 0, np.rint(d * 256.0) + 1.0, 0.0)
    return np.clip(p, 0, 65535).astype(np.uint16)


def decode_disparity_png(p: np.ndarray) -> np.ndarray:
    """Cityscapes' decoding: ``d = (p - 1) / 256`` for ``p > 0``, 0 (invalid) for ``p == 0``."""
    p = np.asarray(p).astype(np.float32)
    return np.where(p > 0, (p - 1.0) / 256.0, 0.0).astype(np.float32)
