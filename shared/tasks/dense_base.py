"""What every depth and every segmentation model shares: its loss and its decoding.

Subclasses set ``focal_baseline``, ``disparity_scale`` and ``loss_kind`` (depth) and implement
``forward``; the network is theirs, the task semantics live here once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from layercast.shared.tasks.dense_ops import (
    depth_results,
    masked_disparity_loss,
    segmentation_loss,
    segmentation_results,
)
from layercast.shared.tasks.interface import TaskModel
from layercast.shared.tasks.types import TaskResult


class DepthTaskModel(TaskModel):
    """A model that predicts disparity (scaled by ``disparity_scale``) and reports depth in metres."""

    task = "depth"
    focal_baseline: float
    disparity_scale: float
    loss_kind: str

    def loss(self, raw: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return masked_disparity_loss(
            raw,
            targets,
            focal_baseline=self.focal_baseline,
            disparity_scale=self.disparity_scale,
            kind=self.loss_kind,
        )

    def postprocess(self, raw: torch.Tensor, image_sizes: Sequence[tuple[int, int]]) -> list[TaskResult]:
        return depth_results(
            raw, image_sizes, focal_baseline=self.focal_baseline, disparity_scale=self.disparity_scale
        )


class SegmentationTaskModel(TaskModel):
    """A model that predicts per-pixel train-id logits (255 ignored in the loss)."""

    task = "segmentation"

    def loss(self, raw: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return segmentation_loss(raw, targets)

    def postprocess(self, raw: torch.Tensor, image_sizes: Sequence[tuple[int, int]]) -> list[TaskResult]:
        return segmentation_results(raw, image_sizes)
