"""Cityscapes loader for depth (from stereo disparity) and semantic segmentation.

Works on real Cityscapes folders and on the synthetic ones: images are found as
``root/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` and their ground truth beside them in
``disparity/`` and ``gtFine/`` under the same ``<city>/<city>_<seq>_<frame>_`` prefix.

Disparity and depth follow Cityscapes' own convention (and the paper's code): a disparity PNG value
``p > 0`` means ``d = (p - 1) / 256`` pixels, ``p = 0`` is invalid; depth is
``baseline * focal / d`` metres, 0 where invalid (and where ``d = 0``, i.e. ``p = 1``). Baseline and
focal come from the image's ``camera/<split>/<city>/*_camera.json`` when there is one (Cityscapes
ships them; so does the synthetic writer), else Cityscapes' 0.209313 m and 2262.52 px scaled to the
image width. The paper's depth model regresses ``(p - 1) / 32768``, i.e. ``disparity / 128``
(:data:`PAPER_DISPARITY_SCALE`), masked where ``p > 0``.

Segmentation: gtFine labelIds mapped to the standard 19 train ids with 255 = ignore.

Each item is ``(image, target)``: ``image`` float (3, H, W) in [0, 1]; ``target`` has ``disparity``
float32 (H, W) pixels, ``depth`` float32 (H, W) metres, ``valid`` bool (H, W), ``semantic`` int64
(H, W) train ids, and ``name`` (``<city>/<stem>``). Missing ground-truth files are an error unless
the key is left out of ``targets``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from layercast.shared.data.camera import (
    CITYSCAPES_BASELINE,
    cityscapes_focal,
    decode_disparity_png,
    disparity_to_depth,
)
from layercast.shared.data.coco import load_image
from layercast.shared.data.labels import (
    IGNORE_INDEX,
    NUM_TRAIN_CLASSES,
    TRAIN_CLASS_NAMES,
    label_ids_to_train_ids,
)
from layercast.shared.errors import ConfigError

Target = dict[str, Any]
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]

#: The paper's code divides ``p - 1`` by 32768, i.e. regresses disparity / 128.
PAPER_DISPARITY_SCALE = 128.0
SPLITS = {"train": "train", "val": "val", "test": "test"}
ALL_TARGETS = ("disparity", "depth", "semantic")


def read_disparity(path: str | Path) -> np.ndarray:
    """A Cityscapes disparity PNG as float32 disparity in pixels (0 = invalid)."""
    with Image.open(path) as im:
        p = np.asarray(im, dtype=np.int64 if im.mode.startswith("I") else np.uint16)
    return decode_disparity_png(p)


def read_label_ids(path: str | Path) -> np.ndarray:
    """A gtFine ``*_labelIds.png`` as uint8 labelIds."""
    with Image.open(path) as im:
        return np.asarray(im, dtype=np.uint8)


def read_camera(path: str | Path, width: int) -> tuple[float, float]:
    """``(baseline, focal)`` from a Cityscapes ``*_camera.json``, or Cityscapes' defaults at ``width``."""
    path = Path(path)
    if path.is_file():
        cam = json.loads(path.read_text())
        return float(cam["extrinsic"]["baseline"]), float(cam["intrinsic"]["fx"])
    return CITYSCAPES_BASELINE, cityscapes_focal(width)


class Cityscapes(Dataset):
    """Cityscapes-layout depth / segmentation dataset (see the module docstring)."""

    num_classes = NUM_TRAIN_CLASSES
    ignore_index = IGNORE_INDEX
    class_names = TRAIN_CLASS_NAMES

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Transform | None = None,
        targets: Sequence[str] = ALL_TARGETS,
    ) -> None:
        if split not in SPLITS:
            raise ConfigError(f"Cityscapes split must be one of {sorted(SPLITS)}, not {split!r}")
        unknown = set(targets) - set(ALL_TARGETS)
        if unknown:
            raise ConfigError(f"unknown Cityscapes targets {sorted(unknown)}; choose from {ALL_TARGETS}")
        self.root, self.split = Path(root), SPLITS[split]
        image_root = self.root / "leftImg8bit" / self.split
        if not image_root.is_dir():
            raise ConfigError(f"Cityscapes images not found: {image_root}")
        self.images = sorted(image_root.glob("*/*_leftImg8bit.png"))
        self.transforms = transforms
        self.targets = tuple(targets)

    def __len__(self) -> int:
        return len(self.images)

    def paths(self, index: int) -> dict[str, Path]:
        """The files of item ``index``: image, disparity, labelIds and camera json."""
        image = self.images[index]
        city, stem = image.parent.name, image.name[: -len("_leftImg8bit.png")]
        return {
            "image": image,
            "disparity": self.root / "disparity" / self.split / city / f"{stem}_disparity.png",
            "label_ids": self.root / "gtFine" / self.split / city / f"{stem}_gtFine_labelIds.png",
            "camera": self.root / "camera" / self.split / city / f"{stem}_camera.json",
        }

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        paths = self.paths(index)
        image = load_image(paths["image"])
        target: Target = {
            "name": f"{paths['image'].parent.name}/{paths['image'].name[: -len('_leftImg8bit.png')]}"
        }
        if "disparity" in self.targets or "depth" in self.targets:
            disparity = read_disparity(paths["disparity"])
            baseline, focal = read_camera(paths["camera"], image.shape[-1])
            target["disparity"] = torch.from_numpy(disparity)
            target["valid"] = torch.from_numpy(disparity > 0)
            if "depth" in self.targets:
                target["depth"] = torch.from_numpy(disparity_to_depth(disparity, baseline, focal))
        if "semantic" in self.targets:
            target["semantic"] = torch.from_numpy(
                label_ids_to_train_ids(read_label_ids(paths["label_ids"])).astype(np.int64)
            )
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
