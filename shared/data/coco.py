"""COCO 2017 detection loader (pycocotools); reads real COCO folders and the synthetic ones alike.

``CocoDetection(root, "val")`` expects ``root/annotations/instances_val2017.json`` and images in
``root/val2017/``. Each item is ``(image, target)``: ``image`` a float tensor in [0, 1] of shape
(3, H, W); ``target`` a dict with ``boxes`` float32 (N, 4) ``x0, y0, x1, y1`` pixels, ``labels``
int64 (N,), ``image_id`` int, ``area`` and ``iscrowd``. Crowd annotations and boxes without area are
dropped, as torchvision's detection references do.

Labels are contiguous train ids ``1..K`` (0 is the background of torchvision detectors), mapped
from the category ids present in the annotation file in increasing order; ``cat_id_to_label`` and
``label_to_cat_id`` give the mapping and ``class_names[label]`` the name. With
``label_mode="coco"`` labels are the raw COCO category ids instead, which is what torchvision's
COCO-pretrained 91-class detectors (and the paper's code) use.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from layercast.shared.errors import ConfigError

Target = dict[str, Any]
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]

SPLIT_DIRS = {
    "train": "train2017",
    "val": "val2017",
    "test": "val2017",
    "train2017": "train2017",
    "val2017": "val2017",
}


def load_image(path: str | Path) -> torch.Tensor:
    """An RGB image file as a float tensor (3, H, W) in [0, 1]."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


class CocoDetection(Dataset):
    """COCO-format detection dataset (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Transform | None = None,
        label_mode: Literal["contiguous", "coco"] = "contiguous",
        skip_empty: bool = False,
        annotation_file: str | Path | None = None,
    ) -> None:
        from pycocotools.coco import COCO

        if split not in SPLIT_DIRS:
            raise ConfigError(f"COCO split must be one of {sorted(SPLIT_DIRS)}, not {split!r}")
        if label_mode not in ("contiguous", "coco"):
            raise ConfigError(f"label_mode must be 'contiguous' or 'coco', not {label_mode!r}")
        self.root = Path(root)
        self.image_dir = self.root / SPLIT_DIRS[split]
        ann = (
            Path(annotation_file)
            if annotation_file
            else self.root / "annotations" / f"instances_{SPLIT_DIRS[split]}.json"
        )
        if not ann.is_file():
            raise ConfigError(f"COCO annotation file not found: {ann}")
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco = COCO(str(ann))
        self.transforms = transforms
        self.label_mode = label_mode
        self.cat_ids: list[int] = sorted(self.coco.getCatIds())
        self.cat_id_to_label = {c: i + 1 for i, c in enumerate(self.cat_ids)}
        self.label_to_cat_id = {i + 1: c for i, c in enumerate(self.cat_ids)}
        names = {c["id"]: c["name"] for c in self.coco.loadCats(self.cat_ids)}
        if label_mode == "contiguous":
            self.class_names = ["__background__"] + [names[c] for c in self.cat_ids]
        else:
            self.class_names = ["__background__"] + [
                names.get(i, "N/A") for i in range(1, max(self.cat_ids, default=0) + 1)
            ]
        ids = sorted(self.coco.getImgIds())
        if skip_empty:
            ids = [i for i in ids if self._annotations(i)[0].shape[0] > 0]
        self.ids = ids

    @property
    def num_classes(self) -> int:
        """Number of classes a detector needs, background included."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def _annotations(self, img_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        info = self.coco.imgs[img_id]
        w, h = info["width"], info["height"]
        anns = [a for a in self.coco.imgToAnns.get(img_id, []) if not a.get("iscrowd", 0)]
        boxes = np.asarray([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        cats = np.asarray([a["category_id"] for a in anns], dtype=np.int64)
        area = np.asarray([a.get("area", 0.0) for a in anns], dtype=np.float32)
        return boxes[keep], cats[keep], area[keep]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        img_id = self.ids[index]
        info = self.coco.imgs[img_id]
        image = load_image(self.image_dir / info["file_name"])
        boxes, cats, area = self._annotations(img_id)
        labels = (
            cats
            if self.label_mode == "coco"
            else np.asarray([self.cat_id_to_label[c] for c in cats], dtype=np.int64)
        )
        target: Target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels.astype(np.int64)),
            "image_id": int(img_id),
            "area": torch.from_numpy(area),
            "iscrowd": torch.zeros(len(labels), dtype=torch.int64),
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
