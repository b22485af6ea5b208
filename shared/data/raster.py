"""Vectorised 2-D rasterisation helpers for the synthetic scenes.

Shapes are signed distance functions (SDFs) evaluated in an object's own metric frame; multiplying
a distance in metres by the pixel scale ``f / Z`` gives pixels, and ``alpha = clip(0.5 - sd_px, 0, 1)``
is an analytic anti-aliased coverage. A :class:`Canvas` holds the colour, depth, labelId and instance
maps; a :class:`Region` is the rectangle of the canvas an object covers, with the object's metric
coordinates of each pixel, and paints parts into the canvas in painter's order.
"""

from __future__ import annotations

import math

import numpy as np

from layercast.shared.data.camera import PinholeCamera

F32 = np.float32


def _make_noise_tile(size: int = 256, seed: int = 20240511) -> np.ndarray:
    """A tileable smooth value-noise texture in [-1, 1] (sum of octaves, fixed seed)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((size, size), dtype=np.float64)
    amp, total = 1.0, 0.0
    for cells in (4, 8, 16, 32, 64, 128):
        grid = rng.uniform(-1.0, 1.0, (cells, cells))
        idx = np.arange(size) * cells / size
        i0 = np.floor(idx).astype(int)
        t = idx - i0
        t = t * t * (3 - 2 * t)
        i1 = (i0 + 1) % cells
        rows = grid[i0] * (1 - t)[:, None] + grid[i1] * t[:, None]
        layer = rows[:, i0] * (1 - t)[None, :] + rows[:, i1] * t[None, :]
        out += amp * layer
        total += amp
        amp *= 0.6
    out /= total
    out /= np.abs(out).max()
    return out.astype(F32)


#: Module-wide smooth noise texture, identical in every process.
NOISE: np.ndarray = _make_noise_tile()
_NMASK = NOISE.shape[0] - 1


_NFLAT = NOISE.ravel()
_NSHIFT = int(np.log2(NOISE.shape[0]))


def noise(x: np.ndarray, y: np.ndarray, scale: float, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Sample :data:`NOISE` (nearest texel) at ``(x, y) * scale`` texels plus an integer offset."""
    ix = (np.floor(np.asarray(x) * F32(scale)).astype(np.int32) + np.int32(offset[0])) & np.int32(_NMASK)
    iy = (np.floor(np.asarray(y) * F32(scale)).astype(np.int32) + np.int32(offset[1])) & np.int32(_NMASK)
    return np.take(_NFLAT, (iy << _NSHIFT) | ix)


def frac(a: np.ndarray) -> np.ndarray:
    """Fractional part ``a - floor(a)`` (numpy's float ``%`` is an order of magnitude slower)."""
    return a - np.floor(a)


def hash01(i: np.ndarray, j: np.ndarray, salt: int = 0) -> np.ndarray:
    """A deterministic pseudo-random value in [0, 1) per integer cell ``(i, j)``."""
    h = (
        (np.asarray(i, dtype=np.int64) * 73856093)
        ^ (np.asarray(j, dtype=np.int64) * 19349663)
        ^ (salt * 83492791)
    )
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFF).astype(F32) / F32(65536.0)


# --- signed distances (metric units; negative inside) ---------------------------------------------


def sd_box(x, y, cx: float, cy: float, hw: float, hh: float, r: float = 0.0):
    """Rounded box centred at ``(cx, cy)`` with half sizes ``hw, hh`` and corner radius ``r``."""
    qx = np.abs(x - cx) - (hw - r)
    qy = np.abs(y - cy) - (hh - r)
    ox, oy = np.maximum(qx, F32(0.0)), np.maximum(qy, F32(0.0))
    outside = np.sqrt(ox * ox + oy * oy)
    return outside + np.minimum(np.maximum(qx, qy), 0) - r


def sd_rect(x, y, x0: float, y0: float, x1: float, y1: float, r: float = 0.0):
    """Rounded box given by its corners."""
    return sd_box(x, y, (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2, r)


def sd_circle(x, y, cx: float, cy: float, r: float):
    """Disc of radius ``r``."""
    dx, dy = x - F32(cx), y - F32(cy)
    return np.sqrt(dx * dx + dy * dy) - F32(r)


def sd_ellipse(x, y, cx: float, cy: float, rx: float, ry: float):
    """Ellipse (approximate distance, exact boundary)."""
    dx, dy = (x - F32(cx)) * F32(1.0 / rx), (y - F32(cy)) * F32(1.0 / ry)
    return (np.sqrt(dx * dx + dy * dy) - F32(1.0)) * F32(min(rx, ry))


def sd_segment(x, y, ax: float, ay: float, bx: float, by: float, r: float):
    """Capsule of radius ``r`` around the segment a-b."""
    px, py = x - ax, y - ay
    dx, dy = bx - ax, by - ay
    h = np.clip((px * dx + py * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    ex, ey = px - dx * h, py - dy * h
    return np.sqrt(ex * ex + ey * ey) - F32(r)


def sd_octagon(x, y, cx: float, cy: float, r: float):
    """Regular octagon with inradius ``r`` and flat top (a stop sign)."""
    px, py = np.abs(x - cx), np.abs(y - cy)
    return np.maximum(np.maximum(px, py), (px + py) * F32(0.70710678)) - r


def sd_trapezoid(x, y, cx: float, y0: float, y1: float, hw0: float, hw1: float, r: float = 0.0):
    """Trapezoid from half width ``hw0`` at ``y0`` to ``hw1`` at ``y1`` (approximate distance)."""
    t = np.clip((y - y0) / (y1 - y0), 0.0, 1.0)
    hw = hw0 + (hw1 - hw0) * t
    dx = np.abs(x - cx) - (hw - r)
    dy = np.abs(y - (y0 + y1) / 2) - ((y1 - y0) / 2 - r)
    ox, oy = np.maximum(dx, F32(0.0)), np.maximum(dy, F32(0.0))
    outside = np.sqrt(ox * ox + oy * oy)
    return outside + np.minimum(np.maximum(dx, dy), 0) - r


# --- canvas -----------------------------------------------------------------------------------------


def rgb3(color) -> np.ndarray:
    """A colour as a planar (3, 1, 1) float32 array (arrays with 3 leading channels pass through)."""
    if isinstance(color, np.ndarray):
        return color.reshape(3, 1, 1) if color.ndim == 1 else color
    c = _RGB_CACHE.get(color)
    if c is None:
        if len(_RGB_CACHE) > 4096:
            _RGB_CACHE.clear()
        c = _RGB_CACHE[color] = np.asarray(color, dtype=F32).reshape(3, 1, 1)
    return c


_RGB_CACHE: dict = {}


class Canvas:
    """Planar colour (3, H, W float RGB in [0, 1]), depth (m, 0 = invalid), labelIds and instance ids.

    Colour is channel-first because numpy broadcasts far faster over a long last axis than over 3.
    Objects do not write depth, label and instance directly: each painted part writes one packed
    ``key`` (object number << 9 | annotated-part bit << 8 | labelId) and :meth:`resolve` unpacks the
    keys once all objects are drawn (one write per part instead of three).
    """

    def __init__(self, height: int, width: int) -> None:
        self.rgb = np.zeros((3, height, width), dtype=F32)
        self.depth = np.zeros((height, width), dtype=F32)
        self.label = np.zeros((height, width), dtype=np.uint8)
        self.key = np.zeros((height, width), dtype=np.int32)
        self.inst = np.zeros((height, width), dtype=np.int32)

    @property
    def shape(self) -> tuple[int, int]:
        return self.depth.shape  # type: ignore[return-value]

    def copy(self) -> Canvas:
        out = Canvas.__new__(Canvas)
        out.rgb, out.depth, out.label = self.rgb.copy(), self.depth.copy(), self.label.copy()
        out.key, out.inst = self.key.copy(), self.inst.copy()
        return out

    def object_pixels(self, obj: int, sl: tuple[slice, slice]) -> np.ndarray:
        """Mask (over ``sl``) of the pixels the annotated parts of object ``obj`` own now."""
        return (self.key[sl] >> 8) == (obj << 1 | 1)

    def resolve(self, depths: np.ndarray) -> None:
        """Unpack object keys into depth, label and instance maps (``depths[obj]`` is object ``obj``'s depth)."""
        key = self.key
        obj = key >> 9
        drawn = obj > 0
        np.copyto(self.label, (key & 0xFF).astype(np.uint8), where=drawn)
        np.copyto(self.depth, np.asarray(depths, F32)[obj], where=drawn)
        self.inst = np.where((key & 0x100) != 0, obj, 0).astype(np.int32)


class Region:
    """The pixels of an object standing on the ground at ``(X, Z)``, in the object's own frame.

    ``x`` (1, w) and ``y`` (h, 1) are each pixel's coordinates in the object frame: world metres across
    from its centre and up from its ground contact, divided by ``k`` (a size factor, so that one
    drawing serves people of any height) and mirrored when ``d = -1``. ``scale`` is pixels per
    object-frame unit; ``extent`` and every part's bounds are in that frame too.
    """

    __slots__ = (
        "canvas",
        "Z",
        "d",
        "scale",
        "u0",
        "vg",
        "full_area",
        "empty",
        "area",
        "sl",
        "rgb_sl",
        "r0",
        "c0",
        "x",
        "y",
        "obj",
    )

    def __init__(
        self,
        canvas: Canvas,
        cam: PinholeCamera,
        X: float,
        Z: float,
        extent: tuple[float, float, float, float],
        k: float = 1.0,
        d: float = 1.0,
        obj: int = 1,
    ) -> None:
        self.canvas, self.Z, self.d, self.obj = canvas, float(Z), float(d), int(obj)
        self.scale = cam.focal / Z * float(k)
        self.u0, self.vg = cam.cx + cam.focal * X / Z, float(cam.ground_row(Z))
        H, W = canvas.shape
        fc0, fc1, fr0, fr1 = self._window(extent)
        self.full_area = max(fc1 - fc0, 0) * max(fr1 - fr0, 0)
        c0, c1, r0, r1 = max(fc0, 0), min(fc1, W), max(fr0, 0), min(fr1, H)
        self._set(c0, c1, r0, r1)
        inv = F32(1.0 / self.scale)
        self.x = ((np.arange(c0, c1, dtype=F32) - F32(self.u0)) * (inv * F32(self.d)))[None, :]
        self.y = ((F32(self.vg) - np.arange(r0, r1, dtype=F32)) * inv)[:, None]

    def _window(self, b: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
        """Unclipped canvas columns and rows covering object-frame bounds ``b`` plus one pixel."""
        xmin, xmax, ymin, ymax = b
        k = self.d * self.scale
        ua, ub = self.u0 + xmin * k, self.u0 + xmax * k
        if ua > ub:
            ua, ub = ub, ua
        return (
            math.floor(ua) - 1,
            math.ceil(ub) + 2,
            math.floor(self.vg - ymax * self.scale) - 1,
            math.ceil(self.vg - ymin * self.scale) + 2,
        )

    def _set(self, c0: int, c1: int, r0: int, r1: int) -> None:
        self.empty = c1 <= c0 or r1 <= r0
        self.area = 0 if self.empty else (c1 - c0) * (r1 - r0)
        self.sl = (slice(r0, r1), slice(c0, c1))
        self.rgb_sl = (slice(None), slice(r0, r1), slice(c0, c1))
        self.r0, self.c0 = r0, c0

    def sub(self, b: tuple[float, float, float, float]) -> Region | None:
        """The part of this region covering object-frame bounds ``b`` (None if it covers nothing)."""
        fc0, fc1, fr0, fr1 = self._window(b)
        pc1, pr1 = self.c0 + self.x.shape[1], self.r0 + self.y.shape[0]
        c0, c1, r0, r1 = max(fc0, self.c0), min(fc1, pc1), max(fr0, self.r0), min(fr1, pr1)
        if c1 <= c0 or r1 <= r0:
            return None
        out = Region.__new__(Region)
        out.canvas, out.Z, out.d, out.scale, out.obj = self.canvas, self.Z, self.d, self.scale, self.obj
        out.u0, out.vg, out.full_area = self.u0, self.vg, 0
        out._set(c0, c1, r0, r1)
        out.x = self.x[:, c0 - self.c0 : c1 - self.c0]
        out.y = self.y[r0 - self.r0 : r1 - self.r0]
        return out

    def alpha(self, sd) -> np.ndarray:
        """Coverage of an object-frame SDF evaluated on this region's coordinates."""
        return np.minimum(np.maximum(F32(0.5) - sd * F32(self.scale), F32(0.0)), F32(1.0))

    def paint(self, alpha, color, label: int, inst: int = 0) -> np.ndarray:
        """Blend ``color`` with coverage ``alpha``; where ``alpha >= 0.5`` this object owns the pixel,
        with ``label``, as an annotated part if ``inst`` is non-zero (see :meth:`Canvas.resolve`).

        Returns the boolean mask of pixels this part now owns.
        """
        rgb = self.canvas.rgb[self.rgb_sl]
        rgb += (rgb3(color) - rgb) * alpha
        owned = alpha >= 0.5
        key = (self.obj << 9) | (0x100 if inst else 0) | int(label)
        np.copyto(self.canvas.key[self.sl], key, where=owned, casting="unsafe")
        return owned

    def shade(self, alpha, strength: float) -> None:
        """Darken (a contact shadow) without changing depth or labels."""
        self.canvas.rgb[self.rgb_sl] *= 1.0 - F32(strength) * alpha

    def part(self, bounds, sdf, color, label: int, inst: int = 0, min_px: float = 0.0) -> None:
        """Paint the shape ``sdf(x, y)`` that lies within object-frame ``bounds``.

        Only the pixels of ``bounds`` are evaluated. ``color`` is a colour or a function of the
        sub-region returning one. Parts whose smaller side is under ``min_px`` pixels are skipped
        (level of detail for distant objects).
        """
        if min_px and min(bounds[1] - bounds[0], bounds[3] - bounds[2]) * self.scale < min_px:
            return
        r = self.sub(bounds)
        if r is None:
            return
        fast = getattr(sdf, "coverage", None)
        alpha = fast(r.x, r.y, r.scale) if fast is not None else None
        if alpha is None:
            alpha = r.alpha(sdf(r.x, r.y))
        r.paint(alpha, color(r) if callable(color) else color, label, inst)

    def shadow(self, bounds, sdf, strength: float) -> None:
        """Darken the shape ``sdf`` within ``bounds`` (a contact shadow)."""
        r = self.sub(bounds)
        if r is not None:
            r.shade(r.alpha(sdf(r.x, r.y)), strength)


class Draws:
    """Scalar random draws from a seeded generator, taken in blocks (numpy's per-call cost is high).

    Offers the subset of :class:`numpy.random.Generator` the scene sampler uses; calls with a
    ``size`` go to the generator itself. The sequence is a pure function of the seed.
    """

    def __init__(self, seed: int | list[int] | np.random.Generator, block: int = 512) -> None:
        self.gen = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self._block = block
        self._buf: list[float] = []
        self._i = 0

    def random(self, size: int | None = None):
        if size is not None:
            return self.gen.random(size)
        if self._i >= len(self._buf):
            self._buf, self._i = self.gen.random(self._block).tolist(), 0
        self._i += 1
        return self._buf[self._i - 1]

    def uniform(self, low: float = 0.0, high: float = 1.0, size=None):
        if size is not None:
            return self.gen.uniform(low, high, size)
        return low + (high - low) * self.random()

    def integers(self, low: int, high: int | None = None, size=None):
        if size is not None:
            return self.gen.integers(low, high, size)
        if high is None:
            low, high = 0, low
        return low + min(int(self.random() * (high - low)), high - low - 1)

    def choice(self, options, p=None):
        if p is None:
            return options[self.integers(len(options))]
        u, acc = self.random(), 0.0
        for option, weight in zip(options, p, strict=True):
            acc += weight
            if u < acc:
                return option
        return options[-1]

    def poisson(self, lam: float) -> int:
        # Knuth's method: fine for the small rates used here
        limit, k, prod = math.exp(-lam), 0, self.random()
        while prod > limit:
            k += 1
            prod *= self.random()
        return k
