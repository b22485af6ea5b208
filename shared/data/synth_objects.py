"""Object sprites of the synthetic street scenes: what each kind looks like, in metres.

Every object is a camera-facing billboard standing on the ground: it is drawn in its own frame
(``x`` across, ``y`` up from its ground contact, see :class:`~layercast.shared.data.raster.Region`)
and takes the depth of its contact point. A kind is an :class:`ObjectKind`: how to sample its
appearance, its extent, and how to draw it part by part. Kinds with a COCO class are annotated; the
others (trees, lamp posts, plain signs) are unannotated clutter with their own Cityscapes labels.
Small details (lights, plates, letters) are skipped when they would be under a pixel or so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from layercast.shared.data.labels import CS
from layercast.shared.data.raster import (
    F32,
    Draws,
    Region,
    frac,
    noise,
    rgb3,
    sd_box,
    sd_circle,
    sd_ellipse,
    sd_octagon,
    sd_segment,
    sd_trapezoid,
)

Params = dict[str, Any]
Color = tuple[float, float, float]
Bounds = tuple[float, float, float, float]
Shape = tuple[Bounds, Callable[[np.ndarray, np.ndarray], np.ndarray]]

#: Parts narrower than this many pixels are details and are skipped.
DETAIL_PX = 1.2


def _c(r: int, g: int, b: int) -> Color:
    return (r / 255.0, g / 255.0, b / 255.0)


CAR_PAINTS = [
    _c(235, 235, 232), _c(25, 25, 28), _c(150, 152, 158), _c(95, 98, 104), _c(170, 25, 30), _c(30, 60, 140),
    _c(20, 35, 70), _c(40, 85, 55), _c(200, 170, 40), _c(120, 30, 40), _c(210, 105, 30), _c(70, 120, 160),
]  # fmt: skip
BUS_PAINTS = [_c(200, 30, 35), _c(230, 190, 30), _c(30, 90, 170), _c(240, 240, 235), _c(40, 130, 80)]
TRUCK_BOXES = [_c(238, 238, 235), _c(200, 200, 196), _c(180, 40, 35), _c(40, 70, 140), _c(225, 140, 40)]
SKIN = [_c(255, 220, 190), _c(235, 190, 150), _c(200, 150, 110), _c(150, 100, 70), _c(95, 65, 45)]
SHIRTS = [
    _c(200, 40, 40), _c(40, 80, 170), _c(240, 240, 240), _c(30, 30, 30), _c(60, 140, 70), _c(230, 200, 50),
    _c(120, 60, 140), _c(240, 130, 40), _c(100, 100, 110), _c(170, 200, 230),
]  # fmt: skip
PANTS = [_c(40, 60, 110), _c(25, 25, 30), _c(90, 80, 60), _c(120, 120, 125), _c(60, 40, 30)]
HAIR = [_c(20, 15, 10), _c(70, 45, 25), _c(150, 110, 60), _c(200, 190, 170), _c(120, 40, 20)]
FRAME_COLORS = [_c(200, 30, 30), _c(30, 30, 35), _c(40, 90, 180), _c(230, 230, 230), _c(40, 140, 60)]
TYRE = _c(18, 18, 20)
GLASS = _c(35, 45, 60)
POLE = _c(120, 122, 125)
HEADLIGHT = _c(250, 245, 215)
TAILLIGHT = _c(205, 22, 20)


# --- shapes: (bounds, sdf) pairs in the object frame ------------------------------------------------


class _BoxSDF:
    """A rounded box's SDF plus a separable coverage used when the rounding is under a pixel."""

    __slots__ = ("cx", "cy", "hw", "hh", "r")

    def __init__(self, cx: float, cy: float, hw: float, hh: float, r: float) -> None:
        self.cx, self.cy, self.hw, self.hh, self.r = cx, cy, hw, hh, r

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return sd_box(x, y, self.cx, self.cy, self.hw, self.hh, self.r)

    def coverage(self, x: np.ndarray, y: np.ndarray, scale: float) -> np.ndarray | None:
        if self.r * scale > 0.75:
            return None
        s = F32(scale)
        ax = np.minimum(
            np.maximum((F32(self.hw + 0.5 / scale) - np.abs(x - F32(self.cx))) * s, F32(0.0)), F32(1.0)
        )
        ay = np.minimum(
            np.maximum((F32(self.hh + 0.5 / scale) - np.abs(y - F32(self.cy))) * s, F32(0.0)), F32(1.0)
        )
        return ax * ay


def rect(x0: float, y0: float, x1: float, y1: float, r: float = 0.0) -> Shape:
    return (x0, x1, y0, y1), _BoxSDF((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2, r)


def box(cx: float, cy: float, hw: float, hh: float, r: float = 0.0) -> Shape:
    return (cx - hw, cx + hw, cy - hh, cy + hh), _BoxSDF(cx, cy, hw, hh, r)


def circle(cx: float, cy: float, r: float) -> Shape:
    return (cx - r, cx + r, cy - r, cy + r), lambda x, y: sd_circle(x, y, cx, cy, r)


def ring(cx: float, cy: float, r: float, width: float) -> Shape:
    return (
        cx - r,
        cx + r,
        cy - r,
        cy + r,
    ), lambda x, y: np.abs(sd_circle(x, y, cx, cy, r - width / 2)) - width / 2


def ellipse(cx: float, cy: float, rx: float, ry: float) -> Shape:
    return (cx - rx, cx + rx, cy - ry, cy + ry), lambda x, y: sd_ellipse(x, y, cx, cy, rx, ry)


def seg(ax: float, ay: float, bx: float, by: float, r: float) -> Shape:
    bounds = (min(ax, bx) - r, max(ax, bx) + r, min(ay, by) - r, max(ay, by) + r)
    return bounds, lambda x, y: sd_segment(x, y, ax, ay, bx, by, r)


def vseg(x: float, y0: float, y1: float, r: float) -> Shape:
    """A vertical capsule (a pole): exactly a box with corner radius ``r``."""
    return box(x, (y0 + y1) / 2, r, (y1 - y0) / 2 + r, r)


def trap(cx: float, y0: float, y1: float, hw0: float, hw1: float, r: float = 0.0) -> Shape:
    hw = max(hw0, hw1)
    return (cx - hw, cx + hw, y0, y1), lambda x, y: sd_trapezoid(x, y, cx, y0, y1, hw0, hw1, r)


def union(*shapes: Shape) -> Shape:
    bounds = (
        min(s[0][0] for s in shapes),
        max(s[0][1] for s in shapes),
        min(s[0][2] for s in shapes),
        max(s[0][3] for s in shapes),
    )
    return bounds, lambda x, y: np.minimum.reduce([s[1](x, y) for s in shapes])


def vgrad(
    color: Color, y0: float, y1: float, lo: float = 0.8, hi: float = 1.1
) -> Callable[[Region], np.ndarray]:
    """``color`` shaded from ``lo`` at height ``y0`` to ``hi`` at ``y1`` (evaluated per sub-region)."""
    c = rgb3(color)

    def shade(r: Region) -> np.ndarray:
        t = np.clip((r.y - y0) / max(y1 - y0, 1e-6), 0.0, 1.0)
        return np.clip(c * (lo + (hi - lo) * t)[None], 0.0, 1.0)

    return shade


def scaled(color: Color, k: float) -> Color:
    return tuple(min(v * k, 1.0) for v in color)  # type: ignore[return-value]


def _pick(rng: Draws, options: list[Color]) -> Color:
    base = np.asarray(options[int(rng.integers(len(options)))])
    return tuple(np.clip(base * rng.uniform(0.85, 1.12), 0, 1).tolist())  # type: ignore[return-value]


def _sign(rng: Draws) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def _shadow(reg: Region, hw: float, strength: float = 0.55) -> None:
    reg.shadow(*ellipse(0.0, 0.0, hw * 1.12, 0.25), strength)


def _wheel(reg: Region, cx: float, cy: float, r: float, tyre: float, rim: Color, lab: int, inst: int) -> None:
    reg.part(*ring(cx, cy, r, tyre), TYRE, lab, inst)
    reg.part(*ring(cx, cy, r - tyre - 0.003, 0.024), rim, lab, inst, DETAIL_PX)
    reg.part(*circle(cx, cy, 0.04), rim, lab, inst, DETAIL_PX)


# --- vehicles ---------------------------------------------------------------------------------------


def sample_car(rng: Draws) -> Params:
    suv = rng.random() < 0.3
    return {
        "w": rng.uniform(1.7, 1.95),
        "h": rng.uniform(1.62, 1.85) if suv else rng.uniform(1.38, 1.55),
        "color": _pick(rng, CAR_PAINTS),
        "cabin": rng.uniform(0.62, 0.72) if suv else rng.uniform(0.68, 0.78),
    }


def extent_car(p: Params) -> Bounds:
    return (-p["w"] / 2 * 1.15, p["w"] / 2 * 1.15, -0.3, p["h"] + 0.05)


def draw_car(reg: Region, p: Params, inst: int, t: float) -> None:
    hw, h, lab, col, front = p["w"] / 2, p["h"], CS["car"], p["color"], p.get("front", False)
    _shadow(reg, hw)
    for sx in (-1, 1):
        reg.part(
            *rect(
                sx * hw - 0.33 if sx > 0 else -hw + 0.03, 0.0, hw - 0.03 if sx > 0 else -hw + 0.33, 0.55, 0.1
            ),
            TYRE,
            lab,
            inst,
        )
    yb = h * (1 - p["cabin"] + 0.58 * p["cabin"]) - 0.25
    reg.part(*rect(-hw, 0.2, hw, yb + 0.08, 0.14), vgrad(col, 0.2, yb, 0.65, 1.05), lab, inst)
    reg.part(*trap(0.0, yb, h, hw * 0.94, hw * 0.74, 0.12), vgrad(col, yb, h, 0.9, 1.05), lab, inst)
    glass = scaled(GLASS, 1.6 if front else 1.0)
    reg.part(
        *trap(0.0, yb + 0.07, h - 0.07, hw * 0.82, hw * 0.66, 0.05), vgrad(glass, yb, h, 0.7, 2.2), lab, inst
    )
    reg.part(*rect(-hw * 0.98, 0.2, hw * 0.98, 0.34, 0.05), scaled(col, 0.45), lab, inst, DETAIL_PX)
    light, ly = (HEADLIGHT if front else TAILLIGHT), yb - 0.14
    for sx in (-1, 1):
        reg.part(*box(sx * (hw - 0.2), ly, 0.15, 0.06, 0.03), light, lab, inst, DETAIL_PX)
    if front:
        reg.part(*box(0.0, ly - 0.02, hw * 0.45, 0.07, 0.03), _c(30, 30, 32), lab, inst, DETAIL_PX)
    reg.part(*box(0.0, 0.42, 0.26, 0.06, 0.01), _c(235, 235, 225), lab, inst, DETAIL_PX)


def sample_bus(rng: Draws) -> Params:
    return {
        "w": rng.uniform(2.45, 2.55),
        "h": rng.uniform(2.95, 3.3),
        "color": _pick(rng, BUS_PAINTS),
        "stripe": _pick(rng, BUS_PAINTS),
    }


def extent_bus(p: Params) -> Bounds:
    return (-p["w"] / 2 * 1.15, p["w"] / 2 * 1.15, -0.3, p["h"] + 0.05)


def draw_bus(reg: Region, p: Params, inst: int, t: float) -> None:
    hw, h, lab, col, front = p["w"] / 2, p["h"], CS["bus"], p["color"], p.get("front", False)
    _shadow(reg, hw)
    reg.part(*rect(-hw + 0.1, 0.0, -hw + 0.45, 0.5, 0.1), TYRE, lab, inst)
    reg.part(*rect(hw - 0.45, 0.0, hw - 0.1, 0.5, 0.1), TYRE, lab, inst)
    reg.part(*rect(-hw, 0.25, hw, h, 0.22), vgrad(col, 0.25, h, 0.7, 1.05), lab, inst)
    reg.part(*rect(-hw, 0.9, hw, 1.15), p["stripe"], lab, inst)
    if front:
        reg.part(
            *rect(-hw + 0.1, 1.3, hw - 0.1, h - 0.45, 0.1),
            vgrad(scaled(GLASS, 1.5), 1.3, h, 0.7, 1.8),
            lab,
            inst,
        )
        lights = HEADLIGHT
    else:
        reg.part(
            *rect(-hw + 0.2, h * 0.62, hw - 0.2, h - 0.4, 0.08), vgrad(GLASS, h * 0.6, h, 0.8, 2.0), lab, inst
        )

        def slats(r: Region) -> np.ndarray:
            return rgb3(col) * ((frac(r.y / 0.16) < 0.5) * F32(0.35) + F32(0.25))[None]

        reg.part(*rect(-0.6, 0.4, 0.6, 0.85, 0.03), slats, lab, inst, DETAIL_PX)
        lights = TAILLIGHT
    reg.part(*rect(-hw * 0.7, h - 0.36, hw * 0.7, h - 0.1, 0.03), _c(20, 20, 20), lab, inst, DETAIL_PX)
    (b, sd) = rect(-hw * 0.6, h - 0.3, hw * 0.6, h - 0.16)
    reg.part(
        b,
        lambda x, y: np.where(noise(x, y, 40.0, (17, 5)) > 0.1, sd(x, y), F32(1.0)),
        _c(255, 170, 30),
        lab,
        inst,
        DETAIL_PX,
    )
    for sx in (-1, 1):
        reg.part(*box(sx * (hw - 0.2), 0.6, 0.12, 0.1, 0.04), lights, lab, inst, DETAIL_PX)


def sample_truck(rng: Draws) -> Params:
    return {
        "w": rng.uniform(2.4, 2.55),
        "h": rng.uniform(3.2, 3.9),
        "box": _pick(rng, TRUCK_BOXES),
        "cab": _pick(rng, CAR_PAINTS),
    }


def extent_truck(p: Params) -> Bounds:
    return (-p["w"] / 2 * 1.15, p["w"] / 2 * 1.15, -0.3, p["h"] + 0.05)


def draw_truck(reg: Region, p: Params, inst: int, t: float) -> None:
    hw, h, lab, front = p["w"] / 2, p["h"], CS["truck"], p.get("front", False)
    _shadow(reg, hw)
    reg.part(*rect(-hw + 0.08, 0.0, -hw + 0.75, 0.95, 0.12), TYRE, lab, inst)
    reg.part(*rect(hw - 0.75, 0.0, hw - 0.08, 0.95, 0.12), TYRE, lab, inst)
    if front:
        reg.part(*rect(-hw * 0.92, 2.6, hw * 0.92, h, 0.05), vgrad(p["box"], 2.6, h, 0.8, 1.0), lab, inst)
        reg.part(*rect(-hw, 0.45, hw, 2.85, 0.2), vgrad(p["cab"], 0.45, 2.85, 0.7, 1.05), lab, inst)
        reg.part(
            *rect(-hw + 0.12, 1.85, hw - 0.12, 2.7, 0.08),
            vgrad(scaled(GLASS, 1.5), 1.85, 2.7, 0.7, 1.8),
            lab,
            inst,
        )

        def grille(r: Region) -> np.ndarray:
            return ((frac(r.y / 0.14) < 0.5) * F32(0.15) + F32(0.1))[None]

        reg.part(*rect(-0.65, 0.7, 0.65, 1.6, 0.05), grille, lab, inst)
        for sx in (-1, 1):
            reg.part(*box(sx * (hw - 0.3), 0.9, 0.18, 0.09, 0.04), HEADLIGHT, lab, inst, DETAIL_PX)
        return
    reg.part(*rect(-hw, 0.45, hw, 0.62), _c(60, 60, 62), lab, inst)
    grad = vgrad(p["box"], 1.0, h, 0.75, 1.02)

    def ribbed(r: Region) -> np.ndarray:
        ribs = np.abs(frac(r.x / 0.3) - 0.5) < 0.12
        return grad(r) * np.where(ribs, F32(1.0), F32(0.82))[None]

    reg.part(*rect(-hw, 0.95, hw, h, 0.04), ribbed, lab, inst)
    reg.part(*rect(-0.02, 1.0, 0.02, h - 0.05), scaled(p["box"], 0.4), lab, inst, 0.5)
    for sx in (-1, 1):
        reg.part(*rect(sx * 0.25 - 0.03, 1.4, sx * 0.25 + 0.03, 2.4), _c(90, 90, 95), lab, inst, 0.8)
        reg.part(*box(sx * (hw - 0.25), 0.75, 0.15, 0.08, 0.03), TAILLIGHT, lab, inst, DETAIL_PX)


def sample_bicycle(rng: Draws) -> Params:
    return {"color": _pick(rng, FRAME_COLORS), "dir": _sign(rng), "r": rng.uniform(0.32, 0.36)}


def extent_bicycle(p: Params) -> Bounds:
    return (-0.95, 0.95, -0.15, 1.1)


def draw_bicycle(reg: Region, p: Params, inst: int, t: float) -> None:
    lab, r = CS["bicycle"], p["r"]
    reg.shadow(*ellipse(0.0, 0.0, 0.9, 0.12), 0.35)
    rear, front, bb = (-0.52, r), (0.52, r), (0.0, 0.3)
    seat, head = (-0.12, 0.86), (0.4, 0.84)
    for cx in (rear[0], front[0]):
        _wheel(reg, cx, r, r, 0.045, _c(170, 170, 175), lab, inst)
    frame = union(
        seg(*rear, *bb, 0.022),
        seg(*bb, *seat, 0.025),
        seg(*seat, *head, 0.025),
        seg(*bb, *head, 0.028),
        seg(*rear, *seat, 0.02),
        seg(*head, *front, 0.022),
        seg(head[0], head[1], head[0] - 0.06, head[1] + 0.18, 0.02),
    )
    reg.part(*frame, p["color"], lab, inst)
    reg.part(*seg(seat[0] - 0.1, seat[1] + 0.06, seat[0] + 0.08, seat[1] + 0.06, 0.035), TYRE, lab, inst)
    reg.part(*seg(head[0] - 0.12, head[1] + 0.2, head[0] + 0.04, head[1] + 0.18, 0.02), TYRE, lab, inst)


def sample_motorcycle(rng: Draws) -> Params:
    return {"color": _pick(rng, CAR_PAINTS + FRAME_COLORS), "dir": _sign(rng)}


def extent_motorcycle(p: Params) -> Bounds:
    return (-1.1, 1.1, -0.2, 1.25)


def draw_motorcycle(reg: Region, p: Params, inst: int, t: float) -> None:
    lab, col = CS["motorcycle"], p["color"]
    reg.shadow(*ellipse(0.0, 0.0, 1.05, 0.15), 0.45)
    for cx in (-0.72, 0.72):
        _wheel(reg, cx, 0.32, 0.32, 0.11, _c(150, 150, 155), lab, inst)
    reg.part(*seg(0.72, 0.32, 0.52, 1.0, 0.035), _c(170, 170, 175), lab, inst)
    reg.part(*rect(-0.25, 0.25, 0.3, 0.62, 0.06), _c(70, 70, 75), lab, inst)
    reg.part(*seg(-0.3, 0.3, -0.85, 0.42, 0.05), _c(190, 190, 195), lab, inst)
    reg.part(*ellipse(0.18, 0.82, 0.38, 0.17), vgrad(col, 0.65, 1.0, 0.7, 1.1), lab, inst)
    reg.part(*seg(-0.75, 0.8, -0.1, 0.86, 0.06), _c(25, 25, 25), lab, inst)
    reg.part(*seg(-0.95, 0.62, -0.6, 0.78, 0.05), col, lab, inst)
    reg.part(*seg(0.45, 1.08, 0.62, 1.02, 0.025), TYRE, lab, inst)
    reg.part(*circle(0.68, 0.9, 0.07), HEADLIGHT, lab, inst, DETAIL_PX)


# --- people (drawn for a 1.75 m person, scaled by k = h / 1.75) ---------------------------------------


def sample_person(rng: Draws) -> Params:
    return {
        "h": rng.uniform(1.55, 1.92),
        "skin": _pick(rng, SKIN),
        "shirt": _pick(rng, SHIRTS),
        "pants": _pick(rng, PANTS),
        "hair": _pick(rng, HAIR),
        "side": bool(rng.random() < 0.5),
        "dir": _sign(rng),
        "phase": rng.uniform(0, 2 * np.pi),
        "coat": bool(rng.random() < 0.3),
        "bag": bool(rng.random() < 0.3),
    }


def extent_person(p: Params) -> Bounds:
    return (-0.45, 0.45, -0.1, 1.78)


def draw_person(reg: Region, p: Params, inst: int, t: float) -> None:
    lab = CS["person"]
    swing = float(np.sin(p["phase"] + t * 2 * np.pi * 0.9))
    reg.shadow(*ellipse(0.0, 0.0, 0.3, 0.08), 0.35)
    if p["side"]:
        feet, hands, sw = (0.22 * swing, -0.22 * swing), (-0.2 * swing, 0.2 * swing), 0.0
    else:
        feet, hands, sw = (0.02 * swing - 0.09, -0.02 * swing + 0.09), (-0.24, 0.24), 0.19
    legs = union(seg(-sw * 0.4, 0.86, feet[0], 0.06, 0.075), seg(sw * 0.4, 0.86, feet[1], 0.06, 0.075))
    reg.part(*legs, vgrad(p["pants"], 0.0, 0.9, 0.75, 1.0), lab, inst)
    shoes = union(box(feet[0] + 0.03, 0.04, 0.09, 0.045, 0.03), box(feet[1] + 0.03, 0.04, 0.09, 0.045, 0.03))
    reg.part(*shoes, _c(30, 28, 28), lab, inst, DETAIL_PX)
    arms = (seg(-sw, 1.38, hands[0] - 0.02, 0.82, 0.045), seg(sw, 1.38, hands[1] + 0.02, 0.82, 0.045))
    bottom = 0.62 if p["coat"] else 0.84
    torso = trap(0.0, bottom, 1.46, 0.13 if p["side"] else 0.17, 0.12 if p["side"] else 0.2, 0.06)
    reg.part(*union(torso, *arms), vgrad(p["shirt"], bottom, 1.46, 0.8, 1.05), lab, inst)
    reg.part(
        *union(circle(hands[0] - 0.02, 0.8, 0.045), circle(hands[1] + 0.02, 0.8, 0.045)),
        p["skin"],
        lab,
        inst,
        DETAIL_PX,
    )
    reg.part(*union(seg(0.0, 1.44, 0.0, 1.52, 0.045), ellipse(0.0, 1.62, 0.1, 0.12)), p["skin"], lab, inst)
    hx = -0.01 if p["side"] else 0.0
    reg.part(
        (hx - 0.11, hx + 0.11, 1.6, 1.77),
        lambda x, y: np.maximum(sd_ellipse(x, y, hx, 1.645, 0.108, 0.115), 1.64 - y),
        p["hair"],
        lab,
        inst,
    )
    if p["bag"]:
        reg.part(
            *box(-0.16 if p["side"] else -0.22, 0.98, 0.08, 0.13, 0.03), _c(60, 40, 30), lab, inst, DETAIL_PX
        )


# --- street furniture ------------------------------------------------------------------------------


def sample_traffic_light(rng: Draws) -> Params:
    return {"top": rng.uniform(3.0, 4.2), "yellow": bool(rng.random() < 0.25), "cycle": rng.uniform(0, 30.0)}


def extent_traffic_light(p: Params) -> Bounds:
    return (-0.3, 0.3, -0.05, p["top"] + 0.05)


def draw_traffic_light(reg: Region, p: Params, inst: int, t: float) -> None:
    top = p["top"]
    cy = top - 0.5
    reg.part(*vseg(0.0, 0.0, cy, 0.06), vgrad(POLE, 0, top, 0.8, 1.1), CS["pole"])
    lab = CS["traffic light"]
    reg.part(*box(0.0, cy, 0.21, 0.5, 0.04), _c(15, 15, 15), lab, inst)
    reg.part(*box(0.0, cy, 0.16, 0.46, 0.05), _c(200, 160, 30) if p["yellow"] else _c(28, 30, 28), lab, inst)
    state = int(((p["cycle"] + t) % 30.0) // 10.0)
    for i, col in enumerate((_c(255, 40, 25), _c(255, 180, 20), _c(40, 255, 140))):
        reg.part(
            *circle(0.0, cy + 0.3 - 0.3 * i, 0.11), col if i == state else scaled(col, 0.22), lab, inst, 0.8
        )


def sample_stop_sign(rng: Draws) -> Params:
    return {"top": rng.uniform(2.4, 2.9), "r": rng.uniform(0.3, 0.38)}


def extent_stop_sign(p: Params) -> Bounds:
    return (-p["r"] * 1.1, p["r"] * 1.1, -0.05, p["top"] + 0.05)


def _stop_letters(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """S, T, O, P drawn with bars in a frame where the sign's inradius is 1."""
    lw, hh = 0.07, 0.24
    s = np.minimum.reduce(
        [
            sd_box(u, v, -0.6, hh - 0.035, 0.12, 0.035),
            sd_box(u, v, -0.6, 0.0, 0.12, 0.035),
            sd_box(u, v, -0.6, -hh + 0.035, 0.12, 0.035),
            sd_box(u, v, -0.685, hh / 2, 0.035, hh / 2),
            sd_box(u, v, -0.515, -hh / 2, 0.035, hh / 2),
        ]
    )
    t = np.minimum(sd_box(u, v, -0.22, hh - 0.035, 0.13, 0.035), sd_box(u, v, -0.22, 0.0, 0.035, hh))
    o = np.abs(sd_box(u, v, 0.16, 0.0, 0.13 - lw / 2, hh - lw / 2, 0.05)) - lw / 2
    p = np.minimum(
        sd_box(u, v, 0.42, 0.0, 0.035, hh),
        np.abs(sd_box(u, v, 0.5, hh / 2, 0.11 - lw / 2, hh / 2 - lw / 2, 0.04)) - lw / 2,
    )
    return np.minimum(np.minimum(s, t), np.minimum(o, p))


def draw_stop_sign(reg: Region, p: Params, inst: int, t: float) -> None:
    r = p["r"]
    cy = p["top"] - r
    reg.part(*vseg(0.0, 0.0, cy, 0.035), POLE, CS["pole"])
    lab = CS["traffic sign"]
    b = (-r, r, cy - r, cy + r)
    reg.part(b, lambda x, y: sd_octagon(x, y, 0.0, cy, r), _c(245, 245, 245), lab, inst)
    reg.part(
        b,
        lambda x, y: sd_octagon(x, y, 0.0, cy, r * 0.88),
        vgrad(_c(200, 20, 30), cy - r, cy + r, 0.85, 1.1),
        lab,
        inst,
    )
    reg.part(
        (-0.75 * r, 0.65 * r, cy - 0.3 * r, cy + 0.3 * r),
        lambda x, y: _stop_letters(x / r, (y - cy) / r) * r,
        _c(245, 245, 245),
        lab,
        inst,
        3.0,
    )


def sample_tree(rng: Draws) -> Params:
    g = rng.uniform(0.7, 1.15)
    return {
        "trunk": rng.uniform(2.0, 3.5),
        "crown": rng.uniform(1.4, 2.8),
        "green": (0.22 * g, 0.36 * g, 0.13 * g),
        "seed": int(rng.integers(256)),
    }


def extent_tree(p: Params) -> Bounds:
    c = p["crown"]
    return (-c * 1.35, c * 1.35, -0.1, p["trunk"] + 2.4 * c)


def draw_tree(reg: Region, p: Params, inst: int, t: float) -> None:
    c, tr, lab = p["crown"], p["trunk"], CS["vegetation"]
    reg.part(*vseg(0.0, 0.0, tr + c, 0.16), _c(80, 60, 45), lab)
    off = (p["seed"], p["seed"] * 3)
    green = rgb3(p["green"])

    cache: list[np.ndarray] = []

    def crown(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        n = noise(x, y, 12.0, off)  # one lookup shapes the outline and shades the leaves
        cache.append(n)
        return sd_ellipse(x, y, 0.0, tr + c, c, c * 1.15) + (0.3 * c) * n

    def leaves(r: Region) -> np.ndarray:
        lum = 0.8 + 0.4 * cache[-1] + 0.25 * np.clip((r.y - tr) / (2 * c), 0, 1)
        return np.clip(green * lum[None], 0, 1)

    reg.part((-1.35 * c, 1.35 * c, tr - 0.4 * c, tr + 2.4 * c), crown, leaves, lab)


def sample_lamp(rng: Draws) -> Params:
    return {"h": rng.uniform(5.5, 8.0), "arm": rng.uniform(0.8, 1.6), "dir": _sign(rng)}


def extent_lamp(p: Params) -> Bounds:
    return (-p["arm"] - 0.4, p["arm"] + 0.4, -0.05, p["h"] + 0.5)


def draw_lamp(reg: Region, p: Params, inst: int, t: float) -> None:
    h, a = p["h"], p["arm"]
    reg.part(*vseg(0.0, 0.0, h, 0.08), vgrad(_c(95, 100, 98), 0, h, 0.7, 1.1), CS["pole"])
    reg.part(*seg(0.0, h, a, h + 0.25, 0.05), _c(95, 100, 98), CS["pole"])
    reg.part(*ellipse(a + 0.15, h + 0.2, 0.3, 0.09), _c(60, 62, 60), CS["pole"])


def sample_sign(rng: Draws) -> Params:
    return {"top": rng.uniform(2.2, 3.0), "round": bool(rng.random() < 0.5), "blue": bool(rng.random() < 0.6)}


def extent_sign(p: Params) -> Bounds:
    return (-0.4, 0.4, -0.05, p["top"] + 0.05)


def draw_sign(reg: Region, p: Params, inst: int, t: float) -> None:
    cy, lab, blue = p["top"] - 0.32, CS["traffic sign"], p["blue"]
    reg.part(*vseg(0.0, 0.0, cy, 0.035), POLE, CS["pole"])
    if p["round"]:
        reg.part(*circle(0.0, cy, 0.3), _c(30, 70, 170) if blue else _c(200, 25, 30), lab)
        reg.part(*circle(0.0, cy, 0.22), _c(40, 90, 190) if blue else _c(240, 240, 240), lab, 0, DETAIL_PX)
        reg.part(
            *seg(-0.1, cy - 0.1, 0.1, cy + 0.1, 0.03),
            _c(240, 240, 240) if blue else _c(20, 20, 20),
            lab,
            0,
            DETAIL_PX,
        )
    else:
        reg.part(*box(0.0, cy, 0.3, 0.3, 0.03), _c(240, 240, 240), lab)
        reg.part(
            *box(0.0, cy, 0.26, 0.26, 0.02), _c(30, 80, 170) if blue else _c(30, 120, 60), lab, 0, DETAIL_PX
        )
        reg.part(*box(0.0, cy, 0.06, 0.18, 0.02), _c(240, 240, 240), lab, 0, DETAIL_PX)


@dataclass(frozen=True)
class ObjectKind:
    """How to sample, bound and draw one kind of object; ``coco_id`` is None for clutter.

    ``size`` gives the frame scale ``k`` of an instance (people are drawn for 1.75 m and scaled).
    """

    name: str
    coco_id: int | None
    sample: Callable[[Draws], Params]
    extent: Callable[[Params], Bounds]
    draw: Callable[[Region, Params, int, float], None]
    size: Callable[[Params], float] = lambda p: 1.0


KINDS: dict[str, ObjectKind] = {
    k.name: k
    for k in (
        ObjectKind("person", 1, sample_person, extent_person, draw_person, lambda p: p["h"] / 1.75),
        ObjectKind("bicycle", 2, sample_bicycle, extent_bicycle, draw_bicycle),
        ObjectKind("car", 3, sample_car, extent_car, draw_car),
        ObjectKind("motorcycle", 4, sample_motorcycle, extent_motorcycle, draw_motorcycle),
        ObjectKind("bus", 6, sample_bus, extent_bus, draw_bus),
        ObjectKind("truck", 8, sample_truck, extent_truck, draw_truck),
        ObjectKind("traffic light", 10, sample_traffic_light, extent_traffic_light, draw_traffic_light),
        ObjectKind("stop sign", 13, sample_stop_sign, extent_stop_sign, draw_stop_sign),
        ObjectKind("tree", None, sample_tree, extent_tree, draw_tree),
        ObjectKind("lamp", None, sample_lamp, extent_lamp, draw_lamp),
        ObjectKind("sign", None, sample_sign, extent_sign, draw_sign),
    )
}
