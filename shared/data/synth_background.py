"""Static part of a synthetic street: sky, distant skyline, building facades and the ground.

Each layer is computed with numpy over the window of the frame it can cover and composited with a
depth test: a vertical facade plane ``X = x_wall`` is seen by column ``u`` at depth
``Z = x_wall f / (u - cx)``; the ground by row ``v`` at ``Z = f h / (v - cy)``; the skyline is a flat
backdrop at ``z_far``. Colours are planar (3, h, w); textures are computed as 2-D brightness maps
and multiplied by a colour last.
"""

from __future__ import annotations

import numpy as np

from layercast.shared.data.labels import CS
from layercast.shared.data.raster import F32, Canvas, frac, hash01, noise, rgb3
from layercast.shared.data.synth_layout import Layout, Side


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a + (b - a) * t


def _composite(
    canvas: Canvas,
    win: tuple[slice, slice],
    alpha: np.ndarray,
    rgb: np.ndarray,
    depth: np.ndarray,
    label: np.ndarray | int,
) -> None:
    """Blend a layer over ``win`` where it is in front of what is there (the sky is infinitely far)."""
    cur = canvas.depth[win]
    front = (cur == 0) | (depth < cur)
    a = (alpha * front).astype(F32, copy=False)
    dst = canvas.rgb[(slice(None), *win)]
    dst += (rgb - dst) * a
    own = a >= 0.5
    np.copyto(cur, depth, where=own)
    np.copyto(canvas.label[win], label, where=own)


def render_sky(canvas: Canvas, lay: Layout) -> None:
    _, H, W = canvas.rgb.shape
    rows = min(H, int(np.ceil(lay.cam.cy)) + 2)  # the ground covers every row below the horizon
    v = np.arange(rows, dtype=F32)[:, None]
    u = np.arange(W, dtype=F32)[None, :]
    t = np.clip(v / max(lay.cam.cy, 1.0), 0.0, 1.0) ** 1.5
    sky = _mix(rgb3(lay.sky_zenith), rgb3(lay.sky_horizon), t[None])
    # clouds: low-frequency noise, stretched horizontally, thinning towards the horizon
    n = noise(u * 0.35 + lay.offsets[0], v * 0.9 + lay.offsets[1], 0.25 * 256 / W)
    c = np.clip((n + F32(lay.clouds - 0.6)) * 2.5, 0.0, 1.0) * (1.0 - t * 0.6) * F32(0.85)
    cloud = (0.85 + 0.15 * n) * F32(0.93)
    canvas.rgb[:, :rows] = sky + (cloud[None] - sky) * c[None]
    canvas.label[:rows] = CS["sky"]
    canvas.depth[:rows] = 0.0


def render_skyline(canvas: Canvas, lay: Layout) -> None:
    H, W = canvas.shape
    cam, z = lay.cam, lay.z_far
    xw = (np.arange(W, dtype=F32) - cam.cx) * F32(z / cam.focal)
    idx = np.clip(np.searchsorted(lay.skyline_edges, xw) - 1, 0, len(lay.skyline_heights) - 1)
    veg = lay.skyline_veg[idx]
    hgt = lay.skyline_heights[idx] + np.where(veg, 3.0 * noise(xw, 0.0 * xw, 1.5, lay.offsets[2:4]), 0.0)
    v_top = (cam.cy - cam.focal * (hgt - cam.height) / z).astype(F32)
    v_bot = cam.ground_row(z)
    r0, r1 = max(int(v_top.min()) - 1, 0), min(int(np.ceil(v_bot)) + 2, H)
    if r1 <= r0:
        return
    v = np.arange(r0, r1, dtype=F32)[:, None]
    alpha = np.clip(v - v_top[None] + 0.5, 0.0, 1.0) * (v <= v_bot + 1)
    y = cam.height - (v - cam.cy) * F32(z / cam.focal)
    storeys = 0.9 + 0.1 * (frac(y / F32(3.2)) > 0.5) * (~veg)[None, :]
    rgb = lay.skyline_colors[idx].T.astype(F32)[:, None, :] * storeys[None]
    label = np.where(veg, CS["vegetation"], CS["building"]).astype(np.uint8)[None, :]
    _composite(canvas, (slice(r0, r1), slice(None)), alpha, rgb, F32(z), label)


def _facade(side: Side, lay: Layout, sign: int, canvas: Canvas) -> None:
    H, W = canvas.shape
    cam = lay.cam
    u = np.arange(W, dtype=F32)
    ray = (u - cam.cx) / F32(cam.focal)
    ok = ray * sign > 1e-4
    zw = np.where(ok, F32(side.x) / np.where(ok, ray, F32(1.0)), F32(np.inf))
    b = side.buildings
    z0s = np.asarray([s.z0 for s in b], F32)
    idx = np.clip(np.searchsorted(z0s, zw, side="right") - 1, 0, len(b) - 1)
    inside = ok & (zw >= z0s[idx]) & (zw < np.asarray([s.z1 for s in b], F32)[idx]) & (zw > 0.5)
    cols = np.flatnonzero(inside)
    if cols.size == 0:
        return
    c0, c1 = int(cols[0]), int(cols[-1]) + 1
    idx, inside = idx[c0:c1], inside[c0:c1]
    zc = np.where(inside, zw[c0:c1], F32(1e6))

    def per_col(attr: str) -> np.ndarray:
        return np.asarray([getattr(s, attr) for s in b], F32)[idx]

    hgt, spacing, floor_h, win_w, win_h, gf = (
        per_col(a) for a in ("height", "win_spacing", "floor_h", "win_w", "win_h", "ground_floor")
    )
    style = np.asarray([s.style for s in b])[idx]
    shop = np.asarray([s.shop for s in b])[idx]
    brick = np.asarray([s.brick for s in b])[idx]
    salt = np.asarray([s.salt for s in b])[idx]
    base = np.asarray([s.color for s in b], F32)[idx].T[:, None, :]  # (3, 1, w)

    v_top = cam.cy - cam.focal * (hgt - cam.height) / zc
    v_bot = cam.cy + cam.focal * cam.height / zc
    r0 = max(int(np.floor(v_top[inside].min())) - 1, 0)
    r1 = min(int(np.ceil(v_bot[inside].max())) + 1, H)
    if r1 <= r0:
        return
    v = np.arange(r0, r1, dtype=F32)[:, None]
    y = cam.height - (v - cam.cy) * (zc / F32(cam.focal))  # height on the facade (h, w)
    a = (zc - z0s[idx])[None, :]  # distance along the facade (1, w)
    alpha = np.clip(v - v_top + 0.5, 0.0, 1.0) * (y > -0.05) * inside

    # pixel footprint on the facade (metres) -> fade fine detail to its mean when it would alias
    foot = np.maximum(zc * zc / (abs(side.x) * cam.focal), zc / cam.focal)
    detail = np.clip(1.6 - foot / (0.25 * spacing), 0.0, 1.0).astype(F32)

    fu = frac(a / spacing)
    yg = y - gf
    fv = frac(yg / floor_h)
    upper = (yg > 0) & (y < hgt - 0.9)
    du, dv = np.abs(fu - 0.5), np.abs(fv - 0.45)
    win = upper & (du < win_w / 2) & (dv < win_h / 2)
    frame = upper & (du < win_w / 2 + 0.05) & (dv < win_h / 2 + 0.06) & ~win
    cell_i, cell_j = np.floor(a / spacing), np.floor(yg / floor_h)
    lit = hash01(cell_i, cell_j, 11)
    if (style == 3).any():
        win &= (style != 3) | (hash01(cell_i, cell_j, 7) < 0.15)
    office = style == 1
    glum = np.where(office, 0.8 + 0.5 * lit, 0.8 + 1.6 * lit * lit) * (0.9 + 0.25 * fv)
    glass = np.where(office, rgb3((0.28, 0.38, 0.42)), rgb3((0.12, 0.14, 0.17))) * glum[None]
    wlum = 0.92 + 0.12 * noise(a, y, 2.0, lay.offsets[4:6])
    wlum = wlum * np.where((style == 2) & (frac(y / floor_h) * floor_h < 0.35), F32(0.78), F32(1.0))
    wlum = wlum * np.where(y > hgt - 0.45, F32(0.8), F32(1.0)) * np.where(frame, F32(1.25), F32(1.0))
    if brick.any():
        # running-bond bricks (24 x 7.7 cm), shown only where a brick spans a few pixels
        course = y * F32(1 / 0.077)
        row = np.floor(course)
        shift = frac(row * F32(0.5)) * F32(0.24)
        along = (a + shift) * F32(1 / 0.24)
        mortar = (frac(course) < 0.2) | (frac(along) < 0.07)
        tone = hash01(np.floor(along), row, 5) * F32(0.14) - F32(0.07)
        show = (brick & (foot < 0.025)) * np.clip(F32(2.0) - foot * F32(60.0), 0.0, 1.0)
        wlum = wlum * (F32(1.0) + show * np.where(mortar, F32(-0.25), tone))
    rgb = np.where(win[None], glass, base * wlum[None])
    if shop.any():
        am = frac(a / F32(4.0)) * 4.0
        shop_win = shop & (y > 0.4) & (y < gf - 0.7) & (am > 0.35) & (am < 3.65)
        awning = shop & (y >= gf - 0.7) & (y < gf - 0.25)
        aw = np.stack([hash01(salt, 0 * salt, s) * k for s, k in ((3, 1.0), (4, 0.6), (5, 0.6))])[:, None, :]
        rgb = np.where(shop_win[None], rgb3((0.1, 0.12, 0.13)), rgb)
        rgb = np.where(awning[None], 0.25 + 0.6 * aw, rgb)
    share = win_w * win_h * 0.85
    mean = base * (1 - share) + rgb3((0.16, 0.18, 0.21)) * share
    rgb = mean + (rgb - mean) * detail
    if sign == lay.sun_side:
        rgb = rgb * F32(0.72)
    _composite(canvas, (slice(r0, r1), slice(c0, c1)), alpha.astype(F32), rgb.astype(F32), zc, CS["building"])


def render_facades(canvas: Canvas, lay: Layout) -> None:
    for side, sign in ((lay.left, -1), (lay.right, 1)):
        if side is not None and side.buildings:
            _facade(side, lay, sign, canvas)


def render_ground(canvas: Canvas, lay: Layout) -> None:
    H, W = canvas.shape
    cam = lay.cam
    r0 = int(np.floor(cam.cy + 0.5)) + 1
    if r0 >= H:
        return
    v = np.arange(r0, H, dtype=F32)[:, None]
    u = np.arange(W, dtype=F32)[None, :]
    zg = (cam.focal * cam.height / (v - cam.cy)).astype(F32)  # (h, 1)
    px = cam.focal / zg  # pixels per metre at this row
    xg = (u - F32(cam.cx)) / px  # lateral position of each ground pixel (h, w)
    x0, x1 = lay.road
    wl, wr = lay.walls
    near = 1.0 / (1.0 + zg / 12.0)
    dz_row = zg * zg / F32(cam.focal * cam.height)  # metres of ground per image row

    fine = noise(xg, zg, 4.0, lay.offsets[2:4])  # shared by asphalt, pavement and terrain
    lum = 1.0 + 0.12 * noise(xg, zg, 0.6, lay.offsets[0:2]) + 0.10 * near * fine
    white = np.zeros(xg.shape, F32)
    yellow = np.zeros(xg.shape, F32)
    for xm, kind in lay.lane_marks:
        if kind == 2:
            d = (np.abs(np.abs(xg - xm) - 0.12) - 0.06) * px
        else:
            d = (np.abs(xg - xm) - 0.075) * px
        a = np.clip(0.5 - d, 0.0, 1.0)
        if kind == 0:
            dash = (frac((zg + F32(lay.offsets[5] * 0.1)) / F32(9.0)) < 0.35).astype(F32)
            blur = np.clip(dz_row / 4.5, 0.0, 1.0)
            a = a * (dash * (1 - blur) + 0.35 * blur)
        if kind == 2:
            yellow = np.maximum(yellow, a)
        else:
            white = np.maximum(white, a)
    if lay.crosswalk is not None:
        c0, c1 = lay.crosswalk
        stripe = (frac(xg - F32(x0)) < 0.5) & (zg > c0) & (zg < c1) & (xg > x0 + 0.3) & (xg < x1 - 0.3)
        white = np.maximum(white, stripe.astype(F32))
    rgb = rgb3(lay.asphalt) * lum[None]
    rgb = _mix(rgb, rgb3((0.88, 0.88, 0.86)), white[None] * F32(0.92))
    if yellow.any():
        rgb = _mix(rgb, rgb3((0.85, 0.7, 0.2)), yellow[None] * F32(0.92))

    # sidewalks (tiles, a curb line) beyond the road edges, terrain beyond the facade planes
    a_sw = np.clip(0.5 + np.maximum(x0 - xg, xg - x1) * px, 0.0, 1.0)
    tile = lay.tile
    plum = 0.96 + 0.06 * fine
    lines = ((np.abs(frac(xg / F32(tile)) - 0.5) > 0.46) | (np.abs(frac(zg / F32(tile)) - 0.5) > 0.46)) & (
        dz_row < tile * 0.4
    )
    plum = plum * np.where(lines, F32(0.85), F32(1.0))
    plum = plum * np.where(np.minimum(np.abs(xg - x0), np.abs(xg - x1)) < 0.22, F32(1.15), F32(1.0))
    rgb = _mix(rgb, rgb3(lay.pavement) * plum[None], a_sw[None])
    a_b = np.clip(0.5 + np.maximum(wl - xg, xg - wr) * px, 0.0, 1.0)
    tlum = 0.85 + 0.25 * fine
    rgb = _mix(rgb, rgb3(lay.terrain) * tlum[None], a_b[None])
    label = np.where(
        a_b >= 0.5,
        np.uint8(CS["terrain"]),
        np.where(a_sw >= 0.5, np.uint8(CS["sidewalk"]), np.uint8(CS["road"])),
    )
    # the shaded side of the street
    edge = wr if lay.sun_side > 0 else -wl
    rgb = rgb * np.where(xg * lay.sun_side > edge - 3.0, F32(0.75), F32(1.0))[None]
    _composite(canvas, (slice(r0, H), slice(None)), F32(1.0), rgb.astype(F32), zg, label)


def render_background(lay: Layout) -> Canvas:
    """Sky, skyline, facades and ground of ``lay`` (no objects)."""
    canvas = Canvas(lay.cam.height_px, lay.cam.width)
    render_sky(canvas, lay)
    render_skyline(canvas, lay)
    render_facades(canvas, lay)
    render_ground(canvas, lay)
    return canvas
