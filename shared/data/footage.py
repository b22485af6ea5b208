"""Camera footage as a training set: frames of many fixed street cameras in the COCO 2017 and
Cityscapes layouts, so ``make_dataset`` (``layercast.train.data``) reads it like ``data synth``'s.

``write_footage(out, cameras, frames, every, seed0=...)`` renders ``cameras`` synthetic fixed
cameras (:class:`~layercast.shared.data.synth.SyntheticCamera`, camera ``k`` seeded ``seed0 + k``)
and writes frames ``0, every, 2·every, ...`` (``frames`` of them) of each as the ``train`` split,
with the generator's ground truth (boxes and instance masks, disparity, labelIds and instanceIds,
camera), in the folders :func:`~layercast.shared.data.writers.generate` writes. Image ``k·frames
+ j`` is frame ``j·every`` of camera ``k``; its COCO record also carries ``video_id`` (the
camera's seed) and ``frame_index``. ``footage_info.json`` lists the cameras and frames.

The evaluation clips (``layercast data clips``) use small seeds (1, 2, ...); training footage
starts from ``layercast.train.temporal.TRAIN_SEED0``, so no evaluation camera is trained on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layercast.shared.data.synth import SyntheticCamera
from layercast.shared.data.writers import GENERATOR_VERSION, prepare_dirs, write_coco_split, write_scene

FOOTAGE_FORMAT = "layercast-footage/1"
SPLIT = "train"


@dataclass(frozen=True)
class FootageSummary:
    """What :func:`write_footage` wrote."""

    root: str
    images: int
    annotations: int
    seconds: float


def _camera_frames(
    out: Path, k: int, seed: int, frames: int, every: int, count: int, size: tuple[int, int], fps: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    camera = SyntheticCamera(seed, size[0], size[1], fps)
    records, anns = [], []
    for j in range(frames):
        index = k * frames + j
        record, scene_anns = write_scene(out, SPLIT, index, count, camera.frame(j * every))
        records.append({**record, "video_id": seed, "frame_index": j * every})
        anns += [{**a, "image_id": record["id"]} for a in scene_anns]
    return records, anns


def write_footage(
    out: str | Path,
    cameras: int,
    frames: int,
    every: int = 5,
    width: int = 256,
    height: int = 192,
    fps: float = 10.0,
    *,
    seed0: int,
    progress: bool = True,
) -> FootageSummary:
    """Write the footage training set (layout in the module docstring) under ``out``."""
    from tqdm import tqdm

    if cameras < 1 or frames < 1 or every < 1:
        raise ValueError("cameras, frames and every must be >= 1")
    t0 = time.perf_counter()
    out = Path(out)
    prepare_dirs(out, SPLIT)
    count = cameras * frames
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    bar = tqdm(range(cameras), desc=f"footage {width}x{height}", unit="camera", disable=not progress)
    for k in bar:
        records, anns = _camera_frames(out, k, seed0 + k, frames, every, count, (width, height), fps)
        images += records
        annotations += [{**a, "id": len(annotations) + i + 1} for i, a in enumerate(anns)]
    description = f"layercast synthetic fixed-camera footage ({GENERATOR_VERSION}), {SPLIT} split"
    write_coco_split(out, SPLIT, description, seed0, images, annotations)
    info = {
        "format": FOOTAGE_FORMAT,
        "generator": GENERATOR_VERSION,
        "width": width,
        "height": height,
        "fps": fps,
        "cameras": cameras,
        "seeds": [seed0, seed0 + cameras - 1],
        "frames_per_camera": frames,
        "frame_indices": [j * every for j in range(frames)],
        "splits": {SPLIT: {"images": len(images), "annotations": len(annotations)}},
    }
    (out / "footage_info.json").write_text(json.dumps(info, indent=2))
    return FootageSummary(str(out), len(images), len(annotations), time.perf_counter() - t0)
