"""The world of one synthetic street scene: road, sidewalks, buildings, skyline, sky, light, objects.

:func:`sample_layout` draws everything from a seeded generator; rendering a layout
(:mod:`~layercast.shared.data.synth_render`) involves no randomness, so a layout rendered at two
times ``t`` shows the same street with the objects moved (see :meth:`ObjectSpec.at`).

Two camera rigs are sampled: ``"dashcam"`` (1.2-1.7 m high in a lane, Cityscapes-like) and
``"street"`` (a fixed camera 2.5-5 m above the right sidewalk, like an edge camera on a pole).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from layercast.shared.data.camera import PinholeCamera, cityscapes_focal
from layercast.shared.data.raster import Draws
from layercast.shared.data.synth_objects import KINDS

Rig = Literal["dashcam", "street"]
RGB = tuple[float, float, float]

FACADES: list[RGB] = [
    (0.62, 0.32, 0.24), (0.78, 0.70, 0.56), (0.88, 0.85, 0.78), (0.55, 0.55, 0.56), (0.92, 0.92, 0.9),
    (0.45, 0.33, 0.25), (0.85, 0.78, 0.5), (0.6, 0.68, 0.75), (0.8, 0.62, 0.6), (0.7, 0.74, 0.66),
]  # fmt: skip


@dataclass
class Building:
    """A facade segment of a building row, from depth ``z0`` to ``z1`` along the street."""

    z0: float
    z1: float
    height: float
    color: RGB
    style: int  # 0 punched windows, 1 glass office, 2 horizontal bands, 3 blank wall with few windows
    win_spacing: float
    floor_h: float
    win_w: float
    win_h: float
    ground_floor: float
    shop: bool
    salt: int
    brick: bool = False


@dataclass
class Side:
    """A row of buildings along one side of the street; ``x`` is the signed X of the facade plane."""

    x: float
    buildings: list[Building]


@dataclass
class ObjectSpec:
    """One object: its kind, contact point ``(X, Z)`` at ``t = 0`` and its motion.

    A moving object (``vz`` or ``vx`` non-zero) travels along a loop: its position wraps from one end
    of ``track_z`` (or ``track_x``) to the other, so any time ``t`` gives a well-defined frame.
    """

    kind: str
    X: float
    Z: float
    params: dict[str, Any]
    vx: float = 0.0
    vz: float = 0.0
    track_x: tuple[float, float] = (0.0, 0.0)
    track_z: tuple[float, float] = (0.0, 0.0)

    def at(self, t: float) -> tuple[float, float]:
        """Contact point ``(X, Z)`` at time ``t`` seconds."""
        x, z = self.X, self.Z
        if self.vz:
            z0, z1 = self.track_z
            z = z0 + (self.Z - z0 + self.vz * t) % (z1 - z0)
        if self.vx:
            x0, x1 = self.track_x
            x = x0 + (self.X - x0 + self.vx * t) % (x1 - x0)
        return x, z


@dataclass
class Layout:
    """Everything needed to render a scene at any time ``t``."""

    cam: PinholeCamera
    road: tuple[float, float]
    walls: tuple[float, float]
    lane_marks: list[tuple[float, int]]  # (X, 0 dashed white | 1 solid white | 2 solid yellow)
    crosswalk: tuple[float, float] | None
    asphalt: RGB
    pavement: RGB
    terrain: RGB
    tile: float
    left: Side | None
    right: Side | None
    z_far: float
    skyline_edges: np.ndarray  # X boundaries of skyline blocks at z_far
    skyline_heights: np.ndarray
    skyline_veg: np.ndarray  # bool per block
    skyline_colors: np.ndarray  # (n, 3)
    sky_zenith: RGB
    sky_horizon: RGB
    clouds: float
    sun_side: int
    gain: RGB
    haze_dist: float
    grain: float
    offsets: tuple[int, ...]
    objects: list[ObjectSpec] = field(default_factory=list)


def _jitter(rng: Draws, c: RGB, amount: float = 0.08) -> RGB:
    return tuple(min(max(v * rng.uniform(1 - amount, 1 + amount), 0.0), 1.0) for v in c)  # type: ignore[return-value]


def _buildings(rng: Draws, z_end: float, gaps: list[tuple[float, float]]) -> list[Building]:
    out: list[Building] = []
    z = 0.0
    while z < z_end:
        width = rng.uniform(6.0, 26.0)
        if any(g0 < z + width and z < g1 for g0, g1 in gaps):
            g0, g1 = next((g0, g1) for g0, g1 in gaps if g0 < z + width and z < g1)
            if g0 - z > 3.0:
                width = g0 - z
            else:
                z = g1
                continue
        style = int(rng.choice([0, 1, 2, 3], p=[0.55, 0.15, 0.2, 0.1]))
        color = _jitter(rng, FACADES[int(rng.integers(len(FACADES)))])
        if style == 1:
            color = _jitter(rng, (0.55, 0.6, 0.62))
        out.append(
            Building(
                z0=z,
                z1=z + width,
                height=rng.uniform(7.0, 32.0),
                color=color,
                style=style,
                win_spacing=rng.uniform(1.8, 3.2),
                floor_h=rng.uniform(2.8, 3.6),
                win_w=rng.uniform(0.35, 0.6) if style != 1 else 0.88,
                win_h=rng.uniform(0.4, 0.62) if style != 1 else 0.8,
                ground_floor=rng.uniform(3.4, 4.6),
                shop=bool(rng.random() < 0.5),
                salt=int(rng.integers(1 << 16)),
                brick=bool(rng.random() < 0.45) and style in (0, 3),
            )
        )
        z += width
        if rng.random() < 0.1:
            z += rng.uniform(4.0, 12.0)  # an alley or a lot
    return out


def sample_layout(
    rng: Draws | np.random.Generator | int | list[int],
    width: int,
    height: int,
    rig: Rig | None = None,
    moving: bool = False,
) -> Layout:
    """Draw a random street. ``moving`` gives vehicles and pedestrians speeds (for video)."""
    if not isinstance(rng, Draws):
        rng = Draws(rng)
    if rig is None:
        rig = "dashcam" if rng.random() < 0.7 else "street"
    f = cityscapes_focal(width)
    if rig == "dashcam":
        cam_h, horizon = rng.uniform(1.2, 1.7), height * rng.uniform(0.4, 0.5)
    else:
        cam_h, horizon = rng.uniform(2.5, 5.0), height * rng.uniform(0.3, 0.42)
    cam = PinholeCamera(width, height, f, width / 2.0 + rng.uniform(-0.02, 0.02) * width, horizon, cam_h)

    n_lanes = int(rng.choice([2, 2, 3, 4]))
    lane_w = rng.uniform(2.9, 3.6)
    two_way = n_lanes >= 2 and rng.random() < 0.75
    first_fwd = n_lanes // 2 if two_way else 0  # lanes [first_fwd, n) drive away from the camera
    sw_l, sw_r = rng.uniform(2.5, 5.0), rng.uniform(2.5, 5.0)
    if rig == "dashcam":
        lane = int(rng.integers(first_fwd, n_lanes))
        x0 = -(lane + 0.5) * lane_w + rng.uniform(-0.3, 0.3)
    else:
        x0 = -n_lanes * lane_w + rng.uniform(-0.5, 1.2)  # above the right curb
        lane = n_lanes - 1 if x0 + n_lanes * lane_w > 0.5 else -1
    x1 = x0 + n_lanes * lane_w
    walls = (x0 - sw_l, max(x1 + sw_r, 0.8))
    marks: list[tuple[float, int]] = [(x0 + 0.25, 1), (x1 - 0.25, 1)]
    yellow = rng.random() < 0.3
    for i in range(1, n_lanes):
        kind = (2 if yellow else 1) if (two_way and i == first_fwd) else 0
        marks.append((x0 + i * lane_w, kind))

    crosswalk = None
    gaps: list[tuple[float, float]] = []
    if rng.random() < 0.4:
        cz = rng.uniform(9.0, 30.0)
        crosswalk = (cz, cz + rng.uniform(3.0, 4.5))
        if rng.random() < 0.7:
            gaps.append((crosswalk[1] + 0.5, crosswalk[1] + rng.uniform(10.0, 16.0)))
    sides = []
    for wall_x in walls:
        sides.append(
            Side(wall_x, _buildings(rng, rng.uniform(60.0, 220.0), gaps)) if rng.random() < 0.85 else None
        )

    z_far = rng.uniform(150.0, 320.0)
    half = (width / 2 + 4) * z_far / f
    edges = [-half]
    while edges[-1] < half:
        edges.append(edges[-1] + rng.uniform(8.0, 32.0))
    nb = len(edges) - 1
    veg = rng.random(nb) < rng.uniform(0.1, 0.6)
    heights = np.where(veg, rng.uniform(6.0, 16.0, nb), rng.uniform(8.0, 50.0, nb))
    colors = np.stack([_jitter(rng, FACADES[int(i)], 0.1) for i in rng.integers(len(FACADES), size=nb)])
    colors[veg] = np.asarray((0.24, 0.34, 0.18)) * rng.uniform(0.8, 1.2, (int(veg.sum()), 1))

    overcast = rng.random() < 0.3
    zenith = _jitter(rng, (0.62, 0.66, 0.7) if overcast else (0.3, 0.5, 0.82), 0.1)
    horizon_c = _jitter(rng, (0.82, 0.84, 0.86) if overcast else (0.7, 0.8, 0.9), 0.06)
    warm = rng.uniform(-0.06, 0.06)
    layout = Layout(
        cam=cam,
        road=(x0, x1),
        walls=walls,
        lane_marks=marks,
        crosswalk=crosswalk,
        asphalt=_jitter(rng, (0.33, 0.33, 0.34), 0.15),
        pavement=_jitter(rng, (0.66, 0.64, 0.6), 0.1),
        terrain=_jitter(rng, (0.35, 0.45, 0.22), 0.15),
        tile=rng.uniform(0.4, 1.0),
        left=sides[0],
        right=sides[1],
        z_far=z_far,
        skyline_edges=np.asarray(edges),
        skyline_heights=heights,
        skyline_veg=veg,
        skyline_colors=colors,
        sky_zenith=zenith,
        sky_horizon=horizon_c,
        clouds=rng.uniform(0.0, 0.8),
        sun_side=int(rng.choice([-1, 1])),
        gain=tuple((rng.uniform(0.8, 1.1) * np.asarray([1 + warm, 1.0, 1 - warm])).tolist()),  # type: ignore[arg-type]
        haze_dist=rng.uniform(250.0, 900.0),
        grain=rng.uniform(0.004, 0.015),
        offsets=tuple(int(v) for v in rng.integers(0, 256, 8)),
    )
    _sample_objects(rng, layout, n_lanes, lane_w, first_fwd, lane, rig, moving)
    return layout


def _add(rng: Draws, layout: Layout, kind: str, X: float, Z: float, **kw: Any) -> ObjectSpec:
    spec = ObjectSpec(kind, X, Z, KINDS[kind].sample(rng), **kw)
    layout.objects.append(spec)
    return spec


def _sample_objects(
    rng: Draws,
    layout: Layout,
    n_lanes: int,
    lane_w: float,
    first_fwd: int,
    cam_lane: int,
    rig: Rig,
    moving: bool,
) -> None:
    x0, x1 = layout.road
    wl, wr = layout.walls
    z_loop = (1.5, 120.0)
    parking = {i for i in (0, n_lanes - 1) if n_lanes >= 3 and i != cam_lane and rng.random() < 0.35}
    for i in range(n_lanes):
        forward = i >= first_fwd
        xc = x0 + (i + 0.5) * lane_w
        parked = i in parking
        speed = 0.0 if parked or not moving else rng.uniform(6.0, 14.0) * (1 if forward else -1)
        if moving:
            z, z_end = rng.uniform(*z_loop), None
            start = z
        else:
            z = rng.uniform(7.0, 20.0) if i == cam_lane else rng.uniform(2.5, 14.0)
            z_end = rng.uniform(45.0, 90.0)
            start = z
        while True:
            kind = str(rng.choice(["car", "bus", "truck"], p=[0.8, 0.08, 0.12]))
            if parked:
                kind = "car"
            length = 4.6 if kind == "car" else 12.0
            lateral = rng.uniform(-0.25, 0.25) * lane_w * (0.6 if parked else 1.0)
            spec = _add(rng, layout, kind, xc + lateral, z, vz=speed, track_z=z_loop)
            spec.params["front"] = not forward
            gap = rng.uniform(0.8, 3.0) if parked else rng.uniform(3.0, 30.0)
            z += length + gap
            if z_end is not None and z > z_end:
                break
            if z_end is None and z - start > z_loop[1] - z_loop[0] - length - 3.0:
                break
            if not moving and rng.random() < 0.15:
                break

    def sidewalk_x(left: bool, lo: float = 0.3, hi: float = 0.4) -> float:
        return rng.uniform(wl + hi, x0 - lo) if left else rng.uniform(x1 + lo, wr - hi)

    for _ in range(int(rng.poisson(3.0)) + int(rng.random() < 0.5)):
        left = rng.random() < 0.45
        walk = moving and rng.random() < 0.8
        _add(
            rng, layout, "person", sidewalk_x(left), rng.uniform(3.0, 45.0),
            vz=rng.uniform(0.8, 1.7) * float(rng.choice([-1, 1])) if walk else 0.0, track_z=(1.0, 60.0),
        )  # fmt: skip
    if layout.crosswalk is not None:
        cz0, cz1 = layout.crosswalk
        for _ in range(int(rng.integers(0, 4))):
            _add(
                rng, layout, "person", rng.uniform(x0, x1), rng.uniform(cz0 + 0.5, cz1 - 0.5),
                vx=rng.uniform(0.9, 1.5) * float(rng.choice([-1, 1])) if moving else 0.0, track_x=(wl, wr),
            )  # fmt: skip
        for left in (True, False):
            if rng.random() < 0.85:
                _add(
                    rng,
                    layout,
                    "traffic light",
                    (x0 - 0.6) if left else (x1 + 0.6),
                    cz0 - rng.uniform(0.5, 1.5),
                )
            if rng.random() < 0.4:
                _add(
                    rng,
                    layout,
                    "traffic light",
                    (x0 - 0.6) if left else (x1 + 0.6),
                    cz1 + rng.uniform(8.0, 14.0),
                )
    elif rng.random() < 0.15:
        _add(rng, layout, "traffic light", x1 + 0.6, rng.uniform(8.0, 40.0))
    for _ in range(int(rng.choice([0, 0, 1, 1, 2]))):
        _add(rng, layout, "bicycle", sidewalk_x(rng.random() < 0.5, 0.5, 1.0), rng.uniform(3.0, 28.0))
    if rng.random() < 0.35:
        _add(rng, layout, "motorcycle", sidewalk_x(rng.random() < 0.5, 0.8, 1.2), rng.uniform(4.0, 35.0))
    if rng.random() < 0.4:
        _add(rng, layout, "stop sign", x1 + rng.uniform(0.3, 0.9), rng.uniform(5.0, 35.0))
    if rng.random() < 0.2:
        _add(rng, layout, "stop sign", x0 - rng.uniform(0.3, 0.9), rng.uniform(5.0, 35.0))
    for left in (True, False):
        curb = x0 - 0.7 if left else x1 + 0.7
        if rng.random() < 0.55:
            z = rng.uniform(2.0, 12.0)
            while z < 75.0:
                _add(rng, layout, "tree", curb + rng.uniform(-0.1, 0.4) * (-1 if left else 1), z)
                z += rng.uniform(9.0, 20.0)
        if rng.random() < 0.6:
            z = rng.uniform(3.0, 20.0)
            while z < 90.0:
                spec = _add(rng, layout, "lamp", curb + (-0.2 if left else 0.2), z)
                spec.params["dir"] = 1.0 if left else -1.0
                z += rng.uniform(25.0, 40.0)
        for _ in range(int(rng.integers(0, 2))):
            _add(rng, layout, "sign", curb, rng.uniform(4.0, 50.0))
