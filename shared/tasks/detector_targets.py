"""Training targets and losses of the small anchor-free detector.

Follows CenterNet (Zhou et al., 2019) for the class-centre heatmap and
penalty-reduced focal loss, and TTFNet (Liu et al., AAAI 2020) for elliptical
Gaussians and box regression from every pixel near the centre, weighted by the
Gaussian and ``log(area)`` with a GIoU loss; regressing from many pixels is
what makes it train in few steps.

Per image and box (feature grid of stride ``s``; ``w, h`` in cells)::

    heat[k] = max(heat[k], exp(-dx²/2σx² - dy²/2σy²)),  σx = α·w/6, σy = α·h/6
    region  = cells within β·box of the centre (always the centre cell)
    weight  = log(area) · G / ΣG over the region (smaller boxes overwrite larger)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss

from layercast.shared.tasks.types import DetectionTarget


@dataclass
class DetectorTargets:
    """Dense targets on the feature grid for a batch."""

    heatmap: torch.Tensor  # (B, K, h, w) in [0, 1], exactly 1 at box centres
    boxes: torch.Tensor  # (B, 4, h, w) xyxy input pixels of the box each cell regresses
    weights: torch.Tensor  # (B, h, w) regression weight, 0 outside every region
    num_boxes: int


def cell_centres(h: int, w: int, stride: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Input-pixel coordinates (x, y) of the centres of a (h, w) grid's cells, each (h, w)."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * stride
    return xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)


def build_targets(
    targets: Sequence[DetectionTarget],
    num_classes: int,
    grid: tuple[int, int],
    stride: int,
    *,
    alpha: float = 0.54,
    beta: float = 0.54,
    device: torch.device | None = None,
) -> DetectorTargets:
    """Rasterise torchvision-style targets onto a (h, w) grid of the given stride."""
    h, w = grid
    device = device or torch.device("cpu")
    b = len(targets)
    heat = torch.zeros(b, num_classes, h, w, device=device)
    reg = torch.zeros(b, 4, h, w, device=device)
    weights = torch.zeros(b, h, w, device=device)
    gx = torch.arange(w, device=device, dtype=torch.float32).view(1, w)
    gy = torch.arange(h, device=device, dtype=torch.float32).view(h, 1)
    total = 0
    for i, t in enumerate(targets):
        boxes = t["boxes"].detach().to(device=device, dtype=torch.float32).reshape(-1, 4)
        labels = t["labels"].detach().to(device=device).reshape(-1).long()
        if boxes.shape[0] != labels.shape[0]:
            raise ValueError(f"image {i}: {boxes.shape[0]} boxes but {labels.shape[0]} labels")
        if labels.numel() and (labels.min() < 1 or labels.max() > num_classes):
            raise ValueError(f"image {i}: labels must be in 1..{num_classes}, got {labels.tolist()}")
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, labels = boxes[keep], labels[keep]
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        for j in torch.argsort(areas, descending=True).tolist():  # small boxes last: they win overlaps
            x1, y1, x2, y2 = boxes[j].tolist()
            bw, bh = (x2 - x1) / stride, (y2 - y1) / stride
            cx, cy = (x1 + x2) / 2 / stride, (y1 + y2) / 2 / stride
            icx, icy = min(max(int(cx), 0), w - 1), min(max(int(cy), 0), h - 1)
            sx, sy = max(alpha * bw / 6, 0.25), max(alpha * bh / 6, 0.25)
            g = torch.exp(-((gx - icx) ** 2) / (2 * sx * sx) - ((gy - icy) ** 2) / (2 * sy * sy))
            k = int(labels[j]) - 1
            heat[i, k] = torch.maximum(heat[i, k], g)
            heat[i, k, icy, icx] = 1.0
            region = ((gx + 0.5 - cx).abs() <= beta * bw / 2) & ((gy + 0.5 - cy).abs() <= beta * bh / 2)
            region[icy, icx] = True
            gr = g * region
            wr = gr / gr.sum() * math.log(max(float(areas[j]), 2.0))
            reg[i, :, region] = boxes[j].view(4, 1)
            weights[i][region] = wr[region]
            total += 1
    return DetectorTargets(heat, reg, weights, total)


def focal_loss(logits: torch.Tensor, heat: torch.Tensor, num_pos: int) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (α = 2, β = 4) from logits, summed / ``num_pos``."""
    p = torch.sigmoid(logits)
    pos = heat.eq(1).float()
    log_p, log_1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
    pos_loss = -((1 - p) ** 2) * log_p * pos
    neg_loss = -((1 - heat) ** 4) * p**2 * log_1mp * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / max(num_pos, 1)


def giou_loss(pred_boxes: torch.Tensor, targets: DetectorTargets) -> torch.Tensor:
    """Weighted GIoU loss over cells with a positive regression weight."""
    mask = targets.weights > 0
    if not mask.any():
        return pred_boxes.sum() * 0.0
    pred = pred_boxes.permute(0, 2, 3, 1)[mask]
    gt = targets.boxes.permute(0, 2, 3, 1)[mask]
    wts = targets.weights[mask]
    per_cell = generalized_box_iou_loss(pred, gt, reduction="none")
    return (per_cell * wts).sum() / (wts.sum() + 1e-6)
