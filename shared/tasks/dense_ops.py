"""Losses and decoding shared by the dense (per-pixel) task models.

Depth models predict *normalised disparity* ``d = focal_baseline / (depth ·
disparity_scale)`` as the paper does (Cityscapes disparity in pixels divided by
a constant), and ``postprocess`` turns it back into metres. ``focal_baseline``
(metres · pixels) only fixes the units of the network output; the default is
Cityscapes' stereo rig (0.209313 m baseline × 2262.52 px focal length), and
any constant gives the same depth in metres once decoded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from layercast.shared.tasks.types import IGNORE_INDEX, TaskResult

#: Cityscapes stereo baseline (m) times focal length (px).
CITYSCAPES_FOCAL_BASELINE = 0.209313 * 2262.52
#: Disparity (px) per unit of network output (the authors' code divides by 128).
DEFAULT_DISPARITY_SCALE = 128.0


def depth_to_disparity(depth: torch.Tensor, focal_baseline: float) -> torch.Tensor:
    """Disparity in pixels; ``0`` where depth is invalid (``<= 0``)."""
    valid = depth > 0
    return torch.where(valid, focal_baseline / depth.clamp_min(1e-6), torch.zeros_like(depth))


def disparity_to_depth(
    disparity: torch.Tensor, focal_baseline: float, min_disparity: float = 1e-3
) -> torch.Tensor:
    """Depth in metres from disparity in pixels (clamped at ``min_disparity``)."""
    return focal_baseline / disparity.clamp_min(min_disparity)


def as_depth_batch(targets: torch.Tensor) -> torch.Tensor:
    """Accept (B, H, W) or (B, 1, H, W) depth and return (B, 1, H, W) float."""
    if targets.ndim == 3:
        targets = targets.unsqueeze(1)
    if targets.ndim != 4 or targets.shape[1] != 1:
        raise ValueError(f"depth targets must be (B, H, W) or (B, 1, H, W), got {tuple(targets.shape)}")
    return targets.float()


def masked_disparity_loss(
    pred: torch.Tensor,
    depth: torch.Tensor,
    *,
    focal_baseline: float,
    disparity_scale: float,
    kind: str = "l1",
) -> torch.Tensor:
    """Mean L1 or squared error of normalised disparity over valid pixels (depth > 0)."""
    depth = as_depth_batch(depth).to(pred.device)
    if depth.shape[-2:] != pred.shape[-2:]:
        raise ValueError(
            f"depth targets {tuple(depth.shape[-2:])} differ from predictions {tuple(pred.shape[-2:])}"
        )
    valid = depth > 0
    target = depth_to_disparity(depth, focal_baseline) / disparity_scale
    diff = (pred - target)[valid]
    if diff.numel() == 0:
        return pred.sum() * 0.0
    if kind == "l1":
        return diff.abs().mean()
    if kind == "mse":
        return diff.square().mean()
    raise ValueError(f"unknown depth loss {kind!r} (expected 'l1' or 'mse')")


def depth_results(
    pred: torch.Tensor,
    image_sizes: Sequence[tuple[int, int]],
    *,
    focal_baseline: float,
    disparity_scale: float,
) -> list[TaskResult]:
    """Normalised disparity (B, 1, h, w) -> one depth map in metres per image size."""
    results = []
    for i, size in enumerate(image_sizes):
        d = pred[i : i + 1].detach().float()
        if tuple(d.shape[-2:]) != tuple(size):
            d = F.interpolate(d, size=tuple(size), mode="bilinear", align_corners=False)
        depth = disparity_to_depth(d[0, 0] * disparity_scale, focal_baseline)
        results.append(TaskResult(depth=depth.cpu().numpy().astype(np.float32)))
    return results


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over pixels, ignoring ``IGNORE_INDEX``; 0 (with a graph) if all are ignored."""
    labels = labels.to(logits.device).long()
    if labels.ndim == 4 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape[-2:] != logits.shape[-2:]:
        raise ValueError(f"labels {tuple(labels.shape[-2:])} differ from logits {tuple(logits.shape[-2:])}")
    if not (labels != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


def segmentation_results(logits: torch.Tensor, image_sizes: Sequence[tuple[int, int]]) -> list[TaskResult]:
    """Logits (B, C, h, w) -> argmax train ids per image size (logits resized bilinearly)."""
    results = []
    for i, size in enumerate(image_sizes):
        z = logits[i : i + 1].detach().float()
        if tuple(z.shape[-2:]) != tuple(size):
            z = F.interpolate(z, size=tuple(size), mode="bilinear", align_corners=False)
        results.append(TaskResult(seg=z[0].argmax(0).cpu().numpy().astype(np.int64)))
    return results
