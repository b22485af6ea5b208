"""Plain data types shared by task models, the codec facade and the evaluation.

``TaskResult`` is what a task model's ``postprocess`` returns for one image and
what ``codec.infer`` hands to the cloud: numpy arrays (no torch), so it can be
serialised into protobuf messages without a device round trip.

Target conventions (what ``TaskModel.loss`` expects):

* detection: ``list[DetectionTarget]`` as torchvision does, one dict per image
  with ``boxes`` float (N, 4) xyxy in input pixels and ``labels`` int64 in 1..K
  (0 is background and never appears in a target);
* depth: float tensor (B, H, W) or (B, 1, H, W) in metres, ``0`` = invalid;
* segmentation: int64 tensor (B, H, W) of train ids, ``255`` = ignore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypedDict

import numpy as np
import torch

#: The machine tasks a task model can solve.
TaskName = Literal["detection", "depth", "segmentation"]

#: Label value of pixels that carry no segmentation ground truth.
IGNORE_INDEX = 255

#: Number of Cityscapes train ids (the segmentation classes).
CITYSCAPES_NUM_CLASSES = 19


class DetectionTarget(TypedDict):
    """Ground truth of one image for detection (torchvision's convention)."""

    boxes: torch.Tensor  # float (N, 4) xyxy, input pixels
    labels: torch.Tensor  # int64 (N,), 1..K


def _empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), dtype=np.float32)


def _empty_labels() -> np.ndarray:
    return np.zeros((0,), dtype=np.int64)


def _empty_scores() -> np.ndarray:
    return np.zeros((0,), dtype=np.float32)


@dataclass(frozen=True)
class TaskResult:
    """The output of a task model for one image.

    Detection models fill ``boxes``/``labels``/``scores`` (xyxy, pixels of the
    image size given to ``postprocess``); a depth model fills ``depth`` (H, W)
    in metres; a segmentation model fills ``seg`` (H, W) with train ids. The
    fields a task does not produce are empty arrays (detection) or ``None``.
    """

    boxes: np.ndarray = field(default_factory=_empty_boxes)
    labels: np.ndarray = field(default_factory=_empty_labels)
    scores: np.ndarray = field(default_factory=_empty_scores)
    depth: np.ndarray | None = None
    seg: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.boxes.shape[0] if self.boxes.ndim == 2 else -1
        if self.boxes.dtype != np.float32 or self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise ValueError(f"boxes must be float32 (N, 4), got {self.boxes.dtype} {self.boxes.shape}")
        if self.labels.dtype != np.int64 or self.labels.shape != (n,):
            raise ValueError(f"labels must be int64 ({n},), got {self.labels.dtype} {self.labels.shape}")
        if self.scores.dtype != np.float32 or self.scores.shape != (n,):
            raise ValueError(f"scores must be float32 ({n},), got {self.scores.dtype} {self.scores.shape}")
        if self.depth is not None and (self.depth.dtype != np.float32 or self.depth.ndim != 2):
            raise ValueError(f"depth must be float32 (H, W), got {self.depth.dtype} {self.depth.shape}")
        if self.seg is not None and (self.seg.dtype != np.int64 or self.seg.ndim != 2):
            raise ValueError(f"seg must be int64 (H, W), got {self.seg.dtype} {self.seg.shape}")

    @property
    def num_detections(self) -> int:
        """Number of boxes."""
        return int(self.boxes.shape[0])
