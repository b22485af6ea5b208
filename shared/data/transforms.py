"""Paired training transforms for ``(image, target)`` samples, and collate functions.

A transform moves the image and every spatial entry of the target together: ``boxes`` (N, 4) xyxy
pixels (with ``labels``, ``area``, ``iscrowd`` kept in step), and dense maps (H, W) under the keys
of :data:`DENSE_KEYS`. Dense maps are resampled with nearest neighbour so that labels and invalid
depth never blend; ``disparity`` is in pixels, so resizing scales its values by the width ratio
(depth in metres is unchanged). Randomness comes from ``torch``'s generator (seed it, or the
DataLoader's per-worker seeding, for reproducibility).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

Target = dict[str, Any]
#: Target keys holding (H, W) maps, with the value used where padding is needed.
DENSE_KEYS: dict[str, float | int | bool] = {
    "depth": 0.0,
    "disparity": 0.0,
    "valid": False,
    "semantic": 255,
    "label_ids": 0,
}
#: Per-box entries filtered together with ``boxes``.
BOX_KEYS = ("labels", "area", "iscrowd")


def _filter_boxes(target: Target, keep: torch.Tensor) -> None:
    target["boxes"] = target["boxes"][keep]
    for k in BOX_KEYS:
        if k in target:
            target[k] = target[k][keep]


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Any]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if torch.rand(()) >= self.p:
            return image, target
        target = dict(target)
        width = image.shape[-1]
        image = image.flip(-1)
        if "boxes" in target:
            b = target["boxes"].clone()
            b[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
            target["boxes"] = b
        for k in DENSE_KEYS:
            if k in target:
                target[k] = target[k].flip(-1)
        return image, target


class RandomCrop:
    """Crop a random ``(height, width)`` window, padding first if the image is smaller.

    Boxes are clipped to the window; a box that keeps less than ``min_box_keep`` of its area is dropped.
    """

    def __init__(self, size: tuple[int, int], min_box_keep: float = 0.3) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.min_box_keep = min_box_keep

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        th, tw = self.size
        h, w = image.shape[-2:]
        target = dict(target)
        if h < th or w < tw:
            ph, pw = max(th - h, 0), max(tw - w, 0)
            image = F.pad(image, (0, pw, 0, ph))
            for k, fill in DENSE_KEYS.items():
                if k in target:
                    target[k] = F.pad(target[k][None].to(torch.float32), (0, pw, 0, ph), value=float(fill))[
                        0
                    ].to(target[k].dtype)
            h, w = image.shape[-2:]
        y0 = int(torch.randint(0, h - th + 1, ()))
        x0 = int(torch.randint(0, w - tw + 1, ()))
        image = image[..., y0 : y0 + th, x0 : x0 + tw]
        for k in DENSE_KEYS:
            if k in target:
                target[k] = target[k][..., y0 : y0 + th, x0 : x0 + tw]
        if "boxes" in target:
            b = target["boxes"]
            area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
            c = b - torch.tensor([x0, y0, x0, y0], dtype=b.dtype)
            c[:, 0::2] = c[:, 0::2].clamp(0, tw)
            c[:, 1::2] = c[:, 1::2].clamp(0, th)
            kept = (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
            target["boxes"] = c
            _filter_boxes(target, (kept > 0) & (kept >= self.min_box_keep * area))
        return image, target


class Resize:
    """Resize to ``(height, width)``: bilinear image, nearest dense maps, scaled boxes and disparity."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        th, tw = self.size
        h, w = image.shape[-2:]
        if (h, w) == (th, tw):
            return image, target
        target = dict(target)
        image = F.interpolate(
            image[None], size=(th, tw), mode="bilinear", align_corners=False, antialias=True
        )[0].clamp(0, 1)
        sx, sy = tw / w, th / h
        for k in DENSE_KEYS:
            if k in target:
                m = target[k]
                m = F.interpolate(m[None, None].to(torch.float32), size=(th, tw), mode="nearest")[0, 0].to(
                    m.dtype
                )
                target[k] = m * sx if k == "disparity" else m
        if "boxes" in target:
            target["boxes"] = target["boxes"] * torch.tensor([sx, sy, sx, sy], dtype=target["boxes"].dtype)
            if "area" in target:
                target["area"] = target["area"] * (sx * sy)
        return image, target


def detection_collate(
    batch: Sequence[tuple[torch.Tensor, Target]],
) -> tuple[list[torch.Tensor], list[Target]]:
    """Lists of images and targets, as torchvision detection models take them."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


def dense_collate(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[torch.Tensor, Target]:
    """Stack same-sized images and their dense maps; other target entries become lists."""
    images, targets = zip(*batch, strict=True)
    out: Target = {}
    for k in targets[0]:
        values = [t[k] for t in targets]
        out[k] = torch.stack(values) if k in DENSE_KEYS else values
    return torch.stack(images), out
