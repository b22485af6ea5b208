"""The paper's torchvision dense models behind the task-model interface.

* ``lraspp_mobilenet_v3_large`` with one output channel: normalised disparity
  (Cityscapes depth), masked MSE as in the authors' code;
* ``deeplabv3_resnet50`` with 19 Cityscapes train ids: cross-entropy with 255
  ignored.

Both are built with ``weights=None, weights_backbone=None``; weights come only
from files the user names (``weights_path`` for the whole model,
``backbone_weights_path`` for an ImageNet classification state dict). Inputs
in [0, 1] are normalised with ImageNet statistics inside the wrapper.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.models.segmentation import deeplabv3_resnet50, lraspp_mobilenet_v3_large

from layercast.shared.tasks.dense_base import DepthTaskModel, SegmentationTaskModel
from layercast.shared.tasks.dense_ops import (
    CITYSCAPES_FOCAL_BASELINE,
    DEFAULT_DISPARITY_SCALE,
)
from layercast.shared.tasks.interface import ImageNormalize, check_images
from layercast.shared.tasks.registry import register_task_model
from layercast.shared.tasks.types import CITYSCAPES_NUM_CLASSES
from layercast.shared.tasks.weights import load_into, load_weights_file, read_state_dict


class TorchvisionDepth(DepthTaskModel):
    """A torchvision segmentation network with one channel read as normalised disparity."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        focal_baseline: float = CITYSCAPES_FOCAL_BASELINE,
        disparity_scale: float = DEFAULT_DISPARITY_SCALE,
        loss_kind: str = "mse",
    ) -> None:
        super().__init__()
        self.normalize = ImageNormalize()
        self.model = model
        self.focal_baseline = focal_baseline
        self.disparity_scale = disparity_scale
        self.loss_kind = loss_kind

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        return self.model(self.normalize(images))["out"]


class TorchvisionSegmenter(SegmentationTaskModel):
    """A torchvision segmentation network predicting train-id logits."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.normalize = ImageNormalize()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        return self.model(self.normalize(images))["out"]


def _load_backbone(backbone: torch.nn.Module, path: str | Path, *, strict: bool, mobilenet: bool) -> None:
    load_into(
        backbone,
        read_state_dict(path),
        strict=strict,
        drop_prefixes=("classifier.",) if mobilenet else ("fc.",),
        strip_prefixes=("features.",) if mobilenet else (),
        source=f"backbone weights {str(path)!r}",
    )


@register_task_model("lraspp_mobilenet_v3_large", task="depth")
def build_lraspp_mobilenet_v3_large(
    *,
    weights_path: str | Path | None = None,
    backbone_weights_path: str | Path | None = None,
    strict: bool = True,
    focal_baseline: float = CITYSCAPES_FOCAL_BASELINE,
    disparity_scale: float = DEFAULT_DISPARITY_SCALE,
    loss_kind: str = "mse",
) -> TorchvisionDepth:
    """LR-ASPP MobileNetV3-Large, 1 output channel (disparity; the paper's depth model)."""
    model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=1)
    if backbone_weights_path is not None:
        _load_backbone(model.backbone, backbone_weights_path, strict=strict, mobilenet=True)
    if weights_path is not None:
        load_weights_file(model, weights_path, strict=strict)
    return TorchvisionDepth(
        model, focal_baseline=focal_baseline, disparity_scale=disparity_scale, loss_kind=loss_kind
    )


@register_task_model("deeplabv3_resnet50", task="segmentation")
def build_deeplabv3_resnet50(
    *,
    num_classes: int = CITYSCAPES_NUM_CLASSES,
    weights_path: str | Path | None = None,
    backbone_weights_path: str | Path | None = None,
    strict: bool = True,
) -> TorchvisionSegmenter:
    """DeepLabV3 ResNet-50 for Cityscapes' 19 train ids (the paper's segmentation model)."""
    model = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
    if backbone_weights_path is not None:
        _load_backbone(model.backbone, backbone_weights_path, strict=strict, mobilenet=False)
    if weights_path is not None:
        # torchvision's own files carry an auxiliary head this wrapper does not use
        load_weights_file(
            model, weights_path, strict=strict, drop_prefixes=("aux_classifier.", "module.aux_classifier.")
        )
    return TorchvisionSegmenter(model)
