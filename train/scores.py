"""Evaluation metrics as accumulators: ``update`` per batch, ``compute`` at the end.

* :class:`DetectionMAP` — COCO box mAP through torchmetrics (pycocotools backend);
* :class:`DepthRMSE` — depth RMSE (m) and disparity RMSE (px) over valid pixels;
* :class:`MeanIoU` — confusion-matrix mIoU with 255 ignored;
* :class:`PSNR` and :class:`MSSSIM` — image fidelity, mean over images;
* :func:`bits_per_pixel` — the rate, always from real byte counts.

Predictions may be :class:`~layercast.shared.tasks.TaskResult` objects, numpy
arrays or tensors; targets follow the task-model conventions (detection dicts
with ``boxes`` xyxy and ``labels``; depth in metres with 0 invalid; train ids
with 255 ignored).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from layercast.shared.tasks.types import IGNORE_INDEX, TaskResult

ArrayLike = np.ndarray | torch.Tensor


def bits_per_pixel(num_bytes: int, height: int, width: int) -> float:
    """Rate of a real bitstream: ``8 · bytes / pixels``."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    return 8.0 * num_bytes / (height * width)


def _tensor(x: ArrayLike, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x.detach().cpu()
    return t.to(dtype) if dtype is not None else t


def _batch(x: Any, field: str) -> list[torch.Tensor]:
    """A TaskResult / array / tensor or a sequence of them -> list of 2-D tensors."""
    if isinstance(x, TaskResult):
        value = getattr(x, field)
        if value is None:
            raise ValueError(f"TaskResult has no {field!r} output")
        return [_tensor(value)]
    if isinstance(x, np.ndarray | torch.Tensor):
        t = _tensor(x)
        if t.ndim == 4 and t.shape[1] == 1:
            t = t[:, 0]
        if t.ndim == 2:
            return [t]
        if t.ndim == 3:
            return list(t)
        raise ValueError(f"expected (H, W) or (B, H, W), got {tuple(t.shape)}")
    return [m for item in x for m in _batch(item, field)]


#: COCO evaluation behind ``DetectionMAP``: faster-coco-eval's C++ port of pycocotools' COCOeval
#: gives the same figures (tests/train/test_train_metrics.py compares them) 3-4x faster, which
#: matters when `layercast eval` scores 23 sweeps of 300 images.
MAP_BACKEND = "faster_coco_eval"


class DetectionMAP:
    """COCO-style box mAP (torchmetrics ``MeanAveragePrecision``; ``backend`` "faster_coco_eval"
    or "pycocotools", the same numbers)."""

    def __init__(self, *, class_metrics: bool = False, backend: str = MAP_BACKEND) -> None:
        from torchmetrics.detection import MeanAveragePrecision

        self._metric = MeanAveragePrecision(
            box_format="xyxy", iou_type="bbox", class_metrics=class_metrics, backend=backend
        )
        self.num_images = 0

    def update(
        self,
        preds: Sequence[TaskResult | Mapping[str, ArrayLike]],
        targets: Sequence[Mapping[str, ArrayLike]],
    ) -> None:
        """Add one batch: predictions (TaskResult or dicts with boxes/scores/labels) and targets."""
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
        p_list, t_list = [], []
        for p, t in zip(preds, targets, strict=True):
            if isinstance(p, TaskResult):
                p = {"boxes": p.boxes, "scores": p.scores, "labels": p.labels}
            p_list.append(
                {
                    "boxes": _tensor(p["boxes"], torch.float32).reshape(-1, 4),
                    "scores": _tensor(p["scores"], torch.float32).reshape(-1),
                    "labels": _tensor(p["labels"], torch.int64).reshape(-1),
                }
            )
            t_list.append(
                {
                    "boxes": _tensor(t["boxes"], torch.float32).reshape(-1, 4),
                    "labels": _tensor(t["labels"], torch.int64).reshape(-1),
                }
            )
        self._metric.update(p_list, t_list)
        self.num_images += len(p_list)

    def compute(self) -> dict[str, Any]:
        """``map`` (IoU .50:.95), ``map_50``, ``map_75``, ``mar_100`` ... as floats (-1 = undefined)."""
        out = self._metric.compute()
        return {k: (v.item() if v.numel() == 1 else v.tolist()) for k, v in out.items()}

    def reset(self) -> None:
        self._metric.reset()
        self.num_images = 0


class DepthRMSE:
    """Root-mean-square depth and disparity errors pooled over all valid pixels.

    Valid pixels have target depth > 0 (and <= ``max_depth`` if given).
    Disparity errors use ``focal_baseline`` (m · px): ``disparity = fB / depth``;
    without it only the depth RMSE is reported.
    """

    def __init__(self, *, focal_baseline: float | None = None, max_depth: float | None = None) -> None:
        self.focal_baseline = focal_baseline
        self.max_depth = max_depth
        self.reset()

    def reset(self) -> None:
        self._sq_depth = 0.0
        self._sq_disp = 0.0
        self._count = 0

    def update(self, preds: Any, targets: Any) -> None:
        """Add predicted depth maps (metres) and target depth maps (metres, 0 = invalid)."""
        p_list, t_list = _batch(preds, "depth"), _batch(targets, "depth")
        if len(p_list) != len(t_list):
            raise ValueError(f"{len(p_list)} predictions for {len(t_list)} targets")
        for p, t in zip(p_list, t_list, strict=True):
            if p.shape != t.shape:
                raise ValueError(f"prediction {tuple(p.shape)} and target {tuple(t.shape)} differ in size")
            p, t = p.double(), t.double()
            valid = t > 0
            if self.max_depth is not None:
                valid &= t <= self.max_depth
            pv, tv = p[valid], t[valid]
            self._sq_depth += float(((pv - tv) ** 2).sum())
            if self.focal_baseline is not None:
                fb = self.focal_baseline
                self._sq_disp += float(((fb / pv.clamp_min(1e-6) - fb / tv) ** 2).sum())
            self._count += int(valid.sum())

    def compute(self) -> dict[str, float]:
        """``depth_rmse`` (m), ``disparity_rmse`` (px, if ``focal_baseline``), ``valid_pixels``."""
        if self._count == 0:
            raise ValueError("DepthRMSE has no valid pixels")
        out = {"depth_rmse": math.sqrt(self._sq_depth / self._count), "valid_pixels": float(self._count)}
        if self.focal_baseline is not None:
            out["disparity_rmse"] = math.sqrt(self._sq_disp / self._count)
        return out


class MeanIoU:
    """Mean intersection-over-union from a confusion matrix; ``ignore_index`` pixels are skipped.

    A class absent from both predictions and targets has an undefined IoU
    (NaN in ``iou_per_class``) and is left out of the mean.
    """

    def __init__(self, num_classes: int = 19, *, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, preds: Any, targets: Any) -> None:
        """Add predicted and target train-id maps (rows of ``confusion`` are targets)."""
        p_list, t_list = _batch(preds, "seg"), _batch(targets, "seg")
        if len(p_list) != len(t_list):
            raise ValueError(f"{len(p_list)} predictions for {len(t_list)} targets")
        k = self.num_classes
        for p, t in zip(p_list, t_list, strict=True):
            if p.shape != t.shape:
                raise ValueError(f"prediction {tuple(p.shape)} and target {tuple(t.shape)} differ in size")
            p, t = p.long().reshape(-1), t.long().reshape(-1)
            keep = t != self.ignore_index
            p, t = p[keep], t[keep]
            if ((t < 0) | (t >= k)).any() or ((p < 0) | (p >= k)).any():
                raise ValueError(f"ids outside 0..{k - 1} (targets may also be {self.ignore_index})")
            self.confusion += torch.bincount(t * k + p, minlength=k * k).view(k, k)

    def compute(self) -> dict[str, Any]:
        """``miou`` and ``iou_per_class`` (NaN for classes absent from predictions and targets)."""
        cm = self.confusion.double()
        tp = cm.diagonal()
        fn = cm.sum(1) - tp
        fp = cm.sum(0) - tp
        union = tp + fp + fn
        iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
        defined = ~torch.isnan(iou)
        if not defined.any():
            raise ValueError("MeanIoU has no labelled pixels")
        return {"miou": float(iou[defined].mean()), "iou_per_class": iou.tolist()}


def _images_float(x: ArrayLike, data_range: float) -> torch.Tensor:
    """uint8 HxWx3 / BxHxWx3 arrays or float (B)x3xHxW tensors -> float64 Bx3xHxW in [0, data_range]."""
    t = _tensor(x)
    if t.dtype == torch.uint8 and t.shape[-1] == 3:  # channels last uint8
        t = t.unsqueeze(0) if t.ndim == 3 else t
        return t.permute(0, 3, 1, 2).double() * (data_range / 255.0)
    t = t.unsqueeze(0) if t.ndim == 3 else t
    if t.ndim != 4:
        raise ValueError(f"expected images (B, 3, H, W) or (H, W, 3) uint8, got {tuple(t.shape)}")
    return t.double()


class PSNR:
    """Peak signal-to-noise ratio in dB, averaged over images.

    ``data_range`` is the peak value of float inputs (1.0 for [0, 1]); uint8
    channels-last arrays are accepted and rescaled. An exact copy (MSE = 0)
    scores ``max_db``.
    """

    def __init__(self, *, data_range: float = 1.0, max_db: float = 100.0) -> None:
        self.data_range = data_range
        self.max_db = max_db
        self.reset()

    def reset(self) -> None:
        self._values: list[float] = []

    def update(self, preds: ArrayLike, targets: ArrayLike) -> None:
        p, t = _images_float(preds, self.data_range), _images_float(targets, self.data_range)
        if p.shape != t.shape:
            raise ValueError(f"prediction {tuple(p.shape)} and target {tuple(t.shape)} differ in size")
        mse = ((p - t) ** 2).flatten(1).mean(1)
        for m in mse.tolist():
            db = self.max_db if m == 0 else 10 * math.log10(self.data_range**2 / m)
            self._values.append(min(db, self.max_db))

    def compute(self) -> dict[str, float]:
        if not self._values:
            raise ValueError("PSNR has no images")
        return {"psnr": float(np.mean(self._values)), "images": float(len(self._values))}


class MSSSIM:
    """Multi-scale SSIM (pytorch_msssim), averaged over images; needs sides > 160 px."""

    def __init__(self, *, data_range: float = 1.0) -> None:
        self.data_range = data_range
        self.reset()

    def reset(self) -> None:
        self._values: list[float] = []

    def update(self, preds: ArrayLike, targets: ArrayLike) -> None:
        from pytorch_msssim import ms_ssim

        p, t = _images_float(preds, self.data_range), _images_float(targets, self.data_range)
        if p.shape != t.shape:
            raise ValueError(f"prediction {tuple(p.shape)} and target {tuple(t.shape)} differ in size")
        vals = ms_ssim(p.float(), t.float(), data_range=self.data_range, size_average=False)
        self._values.extend(vals.tolist())

    def compute(self) -> dict[str, float]:
        if not self._values:
            raise ValueError("MSSSIM has no images")
        return {"ms_ssim": float(np.mean(self._values)), "images": float(len(self._values))}
