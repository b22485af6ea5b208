"""``small_depth`` and ``small_segmenter``: light encoder-decoders for a CPU.

::

    images ─ TinyEncoder (s2..s32) ─ TopDownDecoder (s2, C ch) ─ 3×3 ─ 1×1 ─ bilinear ×2 ─ out

``small_depth`` outputs one channel, softplus → normalised disparity (see
:mod:`layercast.shared.tasks.dense_ops`), trained with a masked L1 loss;
``small_segmenter`` outputs 19 train-id logits, cross-entropy ignoring 255.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from layercast.shared.tasks.dense_base import DepthTaskModel, SegmentationTaskModel
from layercast.shared.tasks.dense_ops import (
    CITYSCAPES_FOCAL_BASELINE,
    DEFAULT_DISPARITY_SCALE,
)
from layercast.shared.tasks.interface import ImageNormalize, check_images
from layercast.shared.tasks.layers import ConvBNAct, TinyEncoder, TopDownDecoder
from layercast.shared.tasks.registry import register_task_model
from layercast.shared.tasks.types import CITYSCAPES_NUM_CLASSES


class SmallDenseNet(nn.Module):
    """Encoder-decoder mapping (B, 3, H, W) in [0, 1] to (B, out_channels, H, W)."""

    def __init__(
        self, out_channels: int, widths: Sequence[int] = (16, 32, 64, 96, 128), channels: int = 32
    ) -> None:
        super().__init__()
        self.normalize = ImageNormalize()
        self.encoder = TinyEncoder(widths)
        self.decoder = TopDownDecoder(widths, channels, out_level=1)
        self.head = nn.Sequential(ConvBNAct(channels, channels, 3), nn.Conv2d(channels, out_channels, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.head(self.decoder(self.encoder(self.normalize(images))))
        return F.interpolate(out, size=images.shape[-2:], mode="bilinear", align_corners=False)


class SmallDepth(DepthTaskModel):
    """Monocular depth as normalised disparity (softplus output), masked L1 loss."""

    def __init__(
        self,
        *,
        focal_baseline: float = CITYSCAPES_FOCAL_BASELINE,
        disparity_scale: float = DEFAULT_DISPARITY_SCALE,
        loss_kind: str = "l1",
        **net_kwargs: object,
    ) -> None:
        super().__init__()
        self.net = SmallDenseNet(1, **net_kwargs)  # type: ignore[arg-type]
        self.focal_baseline = focal_baseline
        self.disparity_scale = disparity_scale
        self.loss_kind = loss_kind

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        return F.softplus(self.net(images))


class SmallSegmenter(SegmentationTaskModel):
    """Semantic segmentation into ``num_classes`` train ids (255 ignored)."""

    def __init__(self, *, num_classes: int = CITYSCAPES_NUM_CLASSES, **net_kwargs: object) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.net = SmallDenseNet(num_classes, **net_kwargs)  # type: ignore[arg-type]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        return self.net(images)


@register_task_model("small_depth", task="depth")
def build_small_depth(**kwargs: object) -> SmallDepth:
    """Small encoder-decoder predicting disparity (~0.3 M parameters)."""
    return SmallDepth(**kwargs)  # type: ignore[arg-type]


@register_task_model("small_segmenter", task="segmentation")
def build_small_segmenter(**kwargs: object) -> SmallSegmenter:
    """Small encoder-decoder for 19 Cityscapes train ids (~0.3 M parameters)."""
    return SmallSegmenter(**kwargs)  # type: ignore[arg-type]
