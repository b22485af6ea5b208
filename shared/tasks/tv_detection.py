"""torchvision ``fasterrcnn_resnet50_fpn_v2`` behind the task-model interface.

The paper's detection model (COCO). Built with ``weights=None,
weights_backbone=None``; weights come only from files the user names:
``weights_path`` (a whole-model state dict, e.g. torchvision's COCO file) or
``backbone_weights_path`` (an ImageNet ResNet-50 state dict).

torchvision computes detection losses inside ``forward(images, targets)``; to
keep ``forward(images)`` / ``loss(raw, targets)`` separate, training-mode
``forward`` stops after the backbone and ``loss`` runs the RPN and RoI heads
with the (resized) targets::

    train: images -> transform -> backbone -> RCNNRaw(features) --loss--> rpn + roi_heads losses
    eval:  images -> transform -> backbone -> rpn -> roi_heads -> RCNNRaw(detections) --postprocess-->

``num_classes`` counts foreground classes (labels 1..K); the torchvision head
gets K + 1 outputs (background). COCO's torchvision weights use K = 90.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import resize_boxes

from layercast.shared.tasks.interface import TaskModel, check_images
from layercast.shared.tasks.registry import register_task_model
from layercast.shared.tasks.types import DetectionTarget, TaskResult
from layercast.shared.tasks.weights import load_into, load_weights_file, read_state_dict


@dataclass
class RCNNRaw:
    """Raw output of :class:`TorchvisionDetector` (only that class reads it)."""

    images: ImageList
    input_sizes: list[tuple[int, int]]
    features: dict[str, torch.Tensor] | None
    detections: list[dict[str, torch.Tensor]] | None


class TorchvisionDetector(TaskModel):
    """Faster R-CNN (ResNet-50 FPN v2) with the uniform task API."""

    task = "detection"

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> RCNNRaw:
        check_images(images)
        m = self.model
        input_sizes = [(int(images.shape[-2]), int(images.shape[-1]))] * images.shape[0]
        image_list, _ = m.transform(list(images))
        features = m.backbone(image_list.tensors)
        if self.training:
            return RCNNRaw(image_list, input_sizes, features, None)
        proposals, _ = m.rpn(image_list, features)
        detections, _ = m.roi_heads(features, proposals, image_list.image_sizes)
        return RCNNRaw(image_list, input_sizes, None, detections)

    def loss(self, raw: RCNNRaw, targets: Sequence[DetectionTarget]) -> torch.Tensor:
        if raw.features is None or not self.training:
            raise ValueError("fasterrcnn loss needs a forward pass in training mode (call .train())")
        resized = [
            {
                "boxes": resize_boxes(t["boxes"].float(), src, tuple(dst)),
                "labels": t["labels"].long(),
            }
            for t, src, dst in zip(targets, raw.input_sizes, raw.images.image_sizes, strict=True)
        ]
        proposals, rpn_losses = self.model.rpn(raw.images, raw.features, resized)
        _, roi_losses = self.model.roi_heads(raw.features, proposals, raw.images.image_sizes, resized)
        return torch.stack([*rpn_losses.values(), *roi_losses.values()]).sum()

    def postprocess(self, raw: RCNNRaw, image_sizes: Sequence[tuple[int, int]]) -> list[TaskResult]:
        if raw.detections is None:
            raise ValueError("fasterrcnn postprocess needs a forward pass in eval mode (call .eval())")
        results = []
        for det, resized, size in zip(raw.detections, raw.images.image_sizes, image_sizes, strict=True):
            boxes = resize_boxes(det["boxes"], tuple(resized), tuple(size))
            results.append(
                TaskResult(
                    boxes=boxes.detach().cpu().numpy().astype(np.float32),
                    labels=det["labels"].detach().cpu().numpy().astype(np.int64),
                    scores=det["scores"].detach().cpu().numpy().astype(np.float32),
                )
            )
        return results


@register_task_model("fasterrcnn_resnet50_fpn_v2", task="detection")
def build_fasterrcnn_resnet50_fpn_v2(
    *,
    num_classes: int = 90,
    weights_path: str | Path | None = None,
    backbone_weights_path: str | Path | None = None,
    strict: bool = True,
    **kwargs: Any,
) -> TorchvisionDetector:
    """Faster R-CNN ResNet-50 FPN v2 (the paper's detector); local weights only.

    ``kwargs`` go to torchvision's ``FasterRCNN`` (``min_size``, ``max_size``,
    ``box_score_thresh``, ``box_detections_per_img``, ``trainable_backbone_layers``...).
    """
    model = fasterrcnn_resnet50_fpn_v2(
        weights=None, weights_backbone=None, num_classes=num_classes + 1, **kwargs
    )
    if backbone_weights_path is not None:
        load_into(
            model.backbone.body,
            read_state_dict(backbone_weights_path),
            strict=strict,
            drop_prefixes=("fc.",),
            source=f"backbone weights {str(backbone_weights_path)!r}",
        )
    wrapper = TorchvisionDetector(model)
    if weights_path is not None:
        load_weights_file(model, weights_path, strict=strict)
    return wrapper
