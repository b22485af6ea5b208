"""``small_detector``: an anchor-free centre-heatmap detector sized for a CPU.

::

    images ─ TinyEncoder (s2..s32) ─ TopDownDecoder (s4, C ch) ─┬─ 3×3 ─ 1×1 → K centre logits
                                                                └─ 3×3 ─ 1×1 → softplus·16 = (l, t, r, b) px

Decoding: sigmoid, 3×3 max-pool peak picking, top-k over classes × cells,
score threshold; a box is the cell centre minus/plus its (l, t, r, b).
Targets and losses are in :mod:`layercast.shared.tasks.detector_targets`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from layercast.shared.tasks.detector_targets import build_targets, cell_centres, focal_loss, giou_loss
from layercast.shared.tasks.interface import ImageNormalize, TaskModel, check_images
from layercast.shared.tasks.layers import TinyEncoder, TopDownDecoder, conv3x3
from layercast.shared.tasks.registry import register_task_model
from layercast.shared.tasks.types import DetectionTarget, TaskResult

STRIDE = 4
#: Pixels per unit of the (softplus) distance output.
DISTANCE_BASE = 16.0
#: Prior probability of a centre at initialisation (CenterNet's -2.19 bias).
PRIOR = 0.1


@dataclass
class DetectorRaw:
    """Raw output of :class:`SmallDetector`."""

    heatmap: torch.Tensor  # (B, K, h, w) logits
    boxes: torch.Tensor  # (B, 4, h, w) xyxy in input pixels
    input_size: tuple[int, int]


class SmallDetector(TaskModel):
    """CenterNet/TTFNet-style detector at stride 4 (labels 1..num_classes).

    ``separable`` swaps the 3×3 convs of the decoder and heads for depthwise-
    separable ones: forward 2× faster, but on the synthetic benchmark it
    reached half the mAP after the same number of steps, so it is off by default.
    """

    task = "detection"

    def __init__(
        self,
        *,
        num_classes: int,
        widths: Sequence[int] = (16, 32, 64, 96, 128),
        channels: int = 64,
        score_threshold: float = 0.05,
        max_detections: int = 100,
        giou_weight: float = 5.0,
        separable: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        self.num_classes = num_classes
        self.score_threshold = score_threshold
        self.max_detections = max_detections
        self.giou_weight = giou_weight
        self.normalize = ImageNormalize()
        self.encoder = TinyEncoder(widths)
        self.decoder = TopDownDecoder(widths, channels, out_level=2, separable=separable)
        self.heat_head = nn.Sequential(
            conv3x3(channels, channels, separable), nn.Conv2d(channels, num_classes, 1)
        )
        self.box_head = nn.Sequential(conv3x3(channels, channels, separable), nn.Conv2d(channels, 4, 1))
        nn.init.constant_(self.heat_head[-1].bias, -float(np.log((1 - PRIOR) / PRIOR)))
        nn.init.normal_(self.box_head[-1].weight, std=0.01)
        nn.init.zeros_(self.box_head[-1].bias)

    def forward(self, images: torch.Tensor) -> DetectorRaw:
        check_images(images)
        feat = self.decoder(self.encoder(self.normalize(images)))
        heat = self.heat_head(feat)
        dist = F.softplus(self.box_head(feat)) * DISTANCE_BASE
        h, w = feat.shape[-2:]
        xs, ys = cell_centres(h, w, STRIDE, feat.device)
        boxes = torch.stack([xs - dist[:, 0], ys - dist[:, 1], xs + dist[:, 2], ys + dist[:, 3]], dim=1)
        return DetectorRaw(heat, boxes, (int(images.shape[-2]), int(images.shape[-1])))

    @staticmethod
    def raw_tensors(raw: DetectorRaw) -> tuple[torch.Tensor, torch.Tensor]:
        """The tensors of ``raw`` (what an exported graph returns; layercast.shared.codec.runtime)."""
        return raw.heatmap, raw.boxes

    @staticmethod
    def raw_from_tensors(tensors: Sequence[torch.Tensor], images: torch.Tensor) -> DetectorRaw:
        """``raw`` again from :meth:`raw_tensors`' tensors and the images they were computed on."""
        heat, boxes = tensors
        return DetectorRaw(heat, boxes, (int(images.shape[-2]), int(images.shape[-1])))

    def loss(self, raw: DetectorRaw, targets: Sequence[DetectionTarget]) -> torch.Tensor:
        if len(targets) != raw.heatmap.shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {raw.heatmap.shape[0]}")
        t = build_targets(
            targets, self.num_classes, tuple(raw.heatmap.shape[-2:]), STRIDE, device=raw.heatmap.device
        )
        return focal_loss(raw.heatmap, t.heatmap, t.num_boxes) + self.giou_weight * giou_loss(raw.boxes, t)

    @torch.no_grad()
    def postprocess(self, raw: DetectorRaw, image_sizes: Sequence[tuple[int, int]]) -> list[TaskResult]:
        b, k, h, w = raw.heatmap.shape
        if len(image_sizes) != b:
            raise ValueError(f"{len(image_sizes)} image sizes for a batch of {b}")
        prob = torch.sigmoid(raw.heatmap.float())
        peaks = prob * (F.max_pool2d(prob, 3, 1, 1) == prob)
        top = min(self.max_detections, k * h * w)
        scores, idx = peaks.reshape(b, -1).topk(top, dim=1)
        cls, cell = idx // (h * w), idx % (h * w)
        in_h, in_w = raw.input_size
        results = []
        for i, (out_h, out_w) in enumerate(image_sizes):
            keep = scores[i] >= self.score_threshold
            boxes = raw.boxes[i].reshape(4, -1)[:, cell[i][keep]].T.float()
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, in_w) * (out_w / in_w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, in_h) * (out_h / in_h)
            results.append(
                TaskResult(
                    boxes=boxes.cpu().numpy().astype(np.float32),
                    labels=(cls[i][keep] + 1).cpu().numpy().astype(np.int64),
                    scores=scores[i][keep].cpu().numpy().astype(np.float32),
                )
            )
        return results


@register_task_model("small_detector", task="detection")
def build_small_detector(*, num_classes: int = 5, **kwargs: object) -> SmallDetector:
    """Small anchor-free detector (~0.5 M parameters) for the synthetic benchmark."""
    return SmallDetector(num_classes=num_classes, **kwargs)  # type: ignore[arg-type]
