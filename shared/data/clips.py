"""Clips of fixed street cameras with ground truth per frame: the video benchmark's data.

``write_clips(out, cameras, frames, width, height)`` renders ``cameras`` synthetic fixed cameras
(:class:`~layercast.shared.data.synth.SyntheticCamera`, camera ``k`` seeded ``seed0 + k``) for
``frames`` consecutive frames each at ``fps`` and writes, under ``out``::

    clips.json                        generator version, fps, size, frames, and the list of clips
    <clip>/frames/000000.png ...      RGB frames in capture order (frame i is at t = i / fps seconds)
    <clip>/annotations.json           COCO 2017 instances for this clip: images (one per frame, with
                                      frame_index and video_id), annotations (bbox xywh, area,
                                      iscrowd, category_id, RLE segmentation), categories
    <clip>/disparity/000000.png ...   Cityscapes disparity per frame: uint16, p = d * 256 + 1, 0 invalid
    <clip>/camera.json                Cityscapes camera file (baseline, fx, fy, u0, v0) of the clip

so a clip is read with the same tools as the COCO and Cityscapes layouts (pycocotools' ``COCO`` on
``annotations.json``). :class:`ClipSet` reads them back as frames and per-frame targets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from layercast.shared.data.camera import disparity_to_depth, encode_disparity_png
from layercast.shared.data.cityscapes import read_camera, read_disparity
from layercast.shared.data.labels import coco_categories
from layercast.shared.data.synth import SyntheticCamera
from layercast.shared.data.writers import GENERATOR_VERSION, PNG_LEVEL, coco_annotations

CLIPS_FORMAT = "layercast-clips/1"


def clip_name(seed: int) -> str:
    return f"cam{seed:05d}"


def write_clip(out: Path, seed: int, frames: int, width: int, height: int, fps: float) -> dict[str, Any]:
    """Render and write one camera's clip; returns its entry of ``clips.json``."""
    name = clip_name(seed)
    root = out / name
    (root / "frames").mkdir(parents=True, exist_ok=True)
    (root / "disparity").mkdir(parents=True, exist_ok=True)
    camera = SyntheticCamera(seed, width, height, fps)
    images, annotations = [], []
    for i in range(frames):
        scene = camera.frame(i)
        Image.fromarray(scene.image).save(root / "frames" / f"{i:06d}.png", compress_level=PNG_LEVEL)
        Image.fromarray(encode_disparity_png(scene.disparity)).save(root / "disparity" / f"{i:06d}.png")
        images.append(
            {
                "id": i + 1,
                "file_name": f"frames/{i:06d}.png",
                "width": width,
                "height": height,
                "frame_index": i,
                "video_id": seed,
            }
        )
        for ann in coco_annotations(scene):
            annotations.append({**ann, "id": len(annotations) + 1, "image_id": i + 1})
        if i == 0:
            (root / "camera.json").write_text(json.dumps(scene.camera.to_cityscapes_json(), indent=2))
    coco = {
        "info": {"description": f"layercast synthetic fixed camera {seed}", "version": GENERATOR_VERSION},
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(),
    }
    (root / "annotations.json").write_text(json.dumps(coco))
    return {"id": name, "seed": seed, "frames": frames}


def write_clips(
    out: str | Path,
    cameras: int,
    frames: int,
    width: int = 256,
    height: int = 192,
    fps: float = 10.0,
    seed0: int = 1,
) -> Path:
    """Write ``cameras`` clips of ``frames`` frames (layout in the module docstring); returns ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clips = [
        write_clip(out, seed0 + k, frames, width, height, fps)
        for k in tqdm(range(cameras), desc=f"clips {width}x{height}")
    ]
    index = {
        "format": CLIPS_FORMAT,
        "generator": GENERATOR_VERSION,
        "fps": fps,
        "width": width,
        "height": height,
        "frames": frames,
        "clips": clips,
    }
    (out / "clips.json").write_text(json.dumps(index, indent=2))
    return out


@dataclass
class Clip:
    """One camera's frames (uint8 HxWx3, in order) and per-frame targets."""

    name: str
    root: Path
    fps: float
    frames: int

    def image(self, i: int) -> np.ndarray:
        with Image.open(self.root / "frames" / f"{i:06d}.png") as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()

    def images(self) -> list[np.ndarray]:
        return [self.image(i) for i in range(self.frames)]

    def detection_targets(self) -> list[dict[str, torch.Tensor]]:
        """Per frame: ``boxes`` (xyxy float32) and ``labels`` (COCO ids), as the COCO loader gives them."""
        coco = json.loads((self.root / "annotations.json").read_text())
        per = [([], []) for _ in range(self.frames)]
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            boxes, labels = per[ann["image_id"] - 1]
            boxes.append([x, y, x + w, y + h])
            labels.append(ann["category_id"])
        return [
            {
                "boxes": torch.tensor(b, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(lab, dtype=torch.int64),
            }
            for b, lab in per
        ]

    def focal_baseline(self, width: int) -> float:
        baseline, focal = read_camera(self.root / "camera.json", width)
        return baseline * focal

    def depth_targets(self) -> list[dict[str, torch.Tensor]]:
        """Per frame: ``depth`` in metres (0 = invalid), from the Cityscapes disparity files."""
        baseline, focal = read_camera(self.root / "camera.json", 0)
        out = []
        for i in range(self.frames):
            disparity = read_disparity(self.root / "disparity" / f"{i:06d}.png")
            out.append({"depth": torch.from_numpy(disparity_to_depth(disparity, baseline, focal))})
        return out


class ClipSet(Sequence[Clip]):
    """The clips written by :func:`write_clips`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        index_path = self.root / "clips.json"
        if not index_path.is_file():
            raise FileNotFoundError(f"{index_path} not found: write clips with `layercast data clips`")
        self.index = json.loads(index_path.read_text())
        if self.index.get("format") != CLIPS_FORMAT:
            raise ValueError(f"{index_path} is not a {CLIPS_FORMAT} index")
        self.fps = float(self.index["fps"])
        self.width, self.height = int(self.index["width"]), int(self.index["height"])
        self._clips = [
            Clip(c["id"], self.root / c["id"], self.fps, int(c["frames"])) for c in self.index["clips"]
        ]

    def __len__(self) -> int:
        return len(self._clips)

    def __getitem__(self, i):  # type: ignore[override]
        return self._clips[i]

    def __iter__(self) -> Iterator[Clip]:
        return iter(self._clips)
