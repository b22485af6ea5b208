"""Procedural street scenes with exact ground truth: the synthetic benchmark of layercast.

A scene is a straight street seen by a level pinhole camera (model in
:mod:`layercast.shared.data.camera`): sky, a distant skyline, textured building facades, a road with
lane markings and crosswalks, sidewalks, and objects standing on the ground: people, bicycles, cars,
motorcycles, buses, trucks, traffic lights and stop signs (annotated, with their real COCO ids) plus
trees, lamp posts and plain signs (unannotated clutter). Objects are camera-facing billboards drawn
back to front (painter's order), so occlusion is real, and each takes the depth of its ground contact
point. Ground depth is ``Z = f h / (v - cy)``; facades and the skyline are vertical planes.

Ground truth per frame (:class:`Scene`): boxes of the *visible* extent of each annotated object
(objects less than :data:`MIN_VISIBLE` visible, or with a box side under :data:`MIN_BOX_SIDE` pixels,
are left unannotated, like a crowd in the distance), COCO category ids, depth in metres (0 = sky,
invalid), disparity with Cityscapes' stereo rig, and Cityscapes labelIds.

Everything is a pure function of the seed: ``render_scene(seed)`` twice gives the same bytes.
:class:`SyntheticCamera` renders a fixed street camera's video with objects moving smoothly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from layercast.shared.data.camera import PinholeCamera, depth_to_disparity
from layercast.shared.data.raster import F32, Canvas, Draws, Region, rgb3
from layercast.shared.data.synth_background import render_background
from layercast.shared.data.synth_layout import Layout, Rig, sample_layout
from layercast.shared.data.synth_objects import KINDS

#: Objects with less than this fraction of their pixels visible are not annotated.
MIN_VISIBLE = 0.2
#: Objects whose visible box is narrower or shorter than this many pixels are not annotated.
MIN_BOX_SIDE = 4


@dataclass
class Scene:
    """One rendered frame and its ground truth.

    ``boxes`` are float32 (N, 4) ``x0, y0, x1, y1`` pixel edges (a box of one pixel at column 3 is
    ``3 .. 4``); ``labels`` int64 (N,) COCO category ids; ``instances`` int32 HxW holds ``i + 1`` on
    the visible pixels of box ``i`` and 0 elsewhere; ``depth`` float32 HxW metres with 0 on the sky;
    ``disparity`` float32 HxW pixels (0 on the sky); ``label_ids`` uint8 HxW Cityscapes labelIds.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    depth: np.ndarray
    disparity: np.ndarray
    label_ids: np.ndarray
    instances: np.ndarray
    camera: PinholeCamera

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


def _draw_objects(canvas: Canvas, lay: Layout, t: float) -> list[tuple[int, int, float, tuple[slice, slice]]]:
    """Draw every object far to near and resolve the canvas maps.

    Returns (object number, coco id, unoccluded pixel estimate, region) of the annotated objects.
    """
    placed = [(spec, *spec.at(t)) for spec in lay.objects]
    order = sorted(range(len(placed)), key=lambda i: (-placed[i][2], i))
    depths = np.zeros(len(placed) + 1, np.float32)
    drawn = []
    for i in order:
        spec, X, Z = placed[i]
        if Z < 1.0:
            continue
        kind = KINDS[spec.kind]
        obj = i + 1
        depths[obj] = Z
        k, d = kind.size(spec.params), spec.params.get("dir", 1.0)
        reg = Region(canvas, lay.cam, X, Z, kind.extent(spec.params), k, d, obj)
        if reg.empty:
            continue
        kind.draw(reg, spec.params, obj if kind.coco_id is not None else 0, t)
        if kind.coco_id is not None:
            own = int(np.count_nonzero(canvas.object_pixels(obj, reg.sl)))
            drawn.append((obj, kind.coco_id, own * reg.full_area / max(reg.area, 1), reg.sl))
    canvas.resolve(depths)
    return drawn


def _annotate(canvas: Canvas, drawn: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes, labels = [], []
    instances = np.zeros(canvas.shape, np.int32)
    for inst, coco_id, full, sl in drawn:
        mask = canvas.inst[sl] == inst
        visible = int(np.count_nonzero(mask))
        if visible == 0 or visible < MIN_VISIBLE * full:
            continue
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        r0, c0 = sl[0].start + rows[0], sl[1].start + cols[0]
        r1, c1 = sl[0].start + rows[-1] + 1, sl[1].start + cols[-1] + 1
        if min(r1 - r0, c1 - c0) < MIN_BOX_SIDE:
            continue
        boxes.append((c0, r0, c1, r1))
        labels.append(coco_id)
        instances[sl][mask] = len(boxes)
    box_arr = np.asarray(boxes, np.float32).reshape(-1, 4)
    return box_arr, np.asarray(labels, np.int64), instances


_GRAIN = np.random.default_rng(7).standard_normal((512, 512)).astype(F32)


def _finish(canvas: Canvas, lay: Layout, grain_seed: int | list[int]) -> np.ndarray:
    """Aerial haze, white balance, vignetting and sensor grain; returns uint8 RGB (H, W, 3)."""
    H, W = canvas.shape
    e = np.where(canvas.depth > 0, np.exp(canvas.depth * F32(-1.0 / lay.haze_dist)), F32(1.0))
    horizon = rgb3(lay.sky_horizon)
    rgb = canvas.rgb - horizon
    rgb *= e
    rgb += horizon
    yy = (np.arange(H, dtype=F32)[:, None] / H - 0.5) * 2
    xx = (np.arange(W, dtype=F32)[None, :] / W - 0.5) * 2
    vignette = 255.0 - 30.6 * (xx * xx + yy * yy)
    rgb *= rgb3(lay.gain) * vignette
    # sensor grain: a window of a fixed Gaussian tile at a seeded offset (tiled for large frames)
    oy, ox = (int(v) for v in np.random.default_rng(grain_seed).integers(0, 512, 2))
    gy, gx = (np.arange(H) + oy) % 512, (np.arange(W) + ox) % 512
    grain = (
        _GRAIN[gy[:, None], gx[None, :]] if H + oy > 512 or W + ox > 512 else _GRAIN[oy : oy + H, ox : ox + W]
    )
    rgb += grain * F32(255.0 * lay.grain)
    rgb += 0.5
    np.clip(rgb, 0.0, 255.0, out=rgb)
    out = np.empty((H, W, 3), np.uint8)
    for c in range(3):
        out[..., c] = rgb[c]
    return out


def render_layout(
    lay: Layout, t: float = 0.0, background: Canvas | None = None, grain_seed: int | list[int] = 0
) -> Scene:
    """Render ``lay`` at time ``t`` seconds (``background`` is a cached :func:`render_background`)."""
    canvas = render_background(lay) if background is None else background.copy()
    drawn = _draw_objects(canvas, lay, t)
    boxes, labels, instances = _annotate(canvas, drawn)
    image = _finish(canvas, lay, grain_seed)
    cam = lay.cam
    return Scene(
        image=image,
        boxes=boxes,
        labels=labels,
        depth=canvas.depth,
        disparity=depth_to_disparity(canvas.depth, cam.baseline, cam.focal),
        label_ids=canvas.label,
        instances=instances,
        camera=cam,
    )


def render_scene(seed: int | list[int], width: int = 256, height: int = 192, rig: Rig | None = None) -> Scene:
    """A random street scene, a pure function of ``seed`` (an int or a list of ints)."""
    rng = Draws(seed)
    lay = sample_layout(rng, width, height, rig=rig)
    return render_layout(lay, 0.0, grain_seed=int(rng.integers(1 << 31)))


class SyntheticCamera:
    """Video of a fixed street camera: the same street, vehicles driving and people walking.

    Frame ``i`` is the scene at ``t = i / fps`` seconds; objects move continuously (they re-enter at
    the far or near end of the street after leaving it). Iterating yields frames forever;
    :meth:`frame` renders any frame index directly. Deterministic by ``seed``.
    """

    def __init__(self, seed: int, width: int = 256, height: int = 192, fps: float = 10.0) -> None:
        self.seed, self.width, self.height, self.fps = int(seed), int(width), int(height), float(fps)
        self.layout = sample_layout(Draws([self.seed, 1]), self.width, self.height, rig="street", moving=True)
        self._background = render_background(self.layout)
        self._next = 0

    def frame(self, index: int) -> Scene:
        """The frame at sequence number ``index``."""
        return render_layout(
            self.layout, index / self.fps, self._background, grain_seed=[self.seed, 2, int(index)]
        )

    def __iter__(self) -> Iterator[Scene]:
        return self

    def __next__(self) -> Scene:
        scene = self.frame(self._next)
        self._next += 1
        return scene
