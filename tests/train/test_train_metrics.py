"""Metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from layercast.shared.tasks import TaskResult
from layercast.train.scores import MSSSIM, PSNR, DepthRMSE, DetectionMAP, MeanIoU, bits_per_pixel


def _pred(boxes: list[list[float]], scores: list[float], labels: list[int]) -> TaskResult:
    return TaskResult(
        boxes=np.array(boxes, np.float32).reshape(-1, 4),
        scores=np.array(scores, np.float32),
        labels=np.array(labels, np.int64),
    )


def _gt(boxes: list[list[float]], labels: list[int]) -> dict:
    return {"boxes": torch.tensor(boxes).reshape(-1, 4), "labels": torch.tensor(labels)}


def test_map_perfect_predictions_is_one() -> None:
    m = DetectionMAP()
    gts = [_gt([[10, 10, 60, 50], [70, 20, 120, 90]], [1, 2]), _gt([[5, 5, 40, 40]], [1])]
    preds = [
        _pred([[10, 10, 60, 50], [70, 20, 120, 90]], [0.9, 0.8], [1, 2]),
        _pred([[5, 5, 40, 40]], [0.7], [1]),
    ]
    m.update(preds, gts)
    out = m.compute()
    assert out["map"] == pytest.approx(1.0) and out["map_50"] == pytest.approx(1.0)
    assert m.num_images == 2


def test_map_one_hit_one_false_positive_one_miss() -> None:
    # ranks: TP (P=1, R=.5), FP (P=.5, R=.5); COCO's 101-point interpolation gives 1 for the
    # 51 recall thresholds 0, .01, ..., .50 and 0 above: AP = 51/101 at every IoU threshold
    m = DetectionMAP()
    m.update(
        [_pred([[0, 0, 50, 50], [200, 200, 250, 250]], [0.9, 0.8], [1, 1])],
        [_gt([[0, 0, 50, 50], [100, 0, 150, 50]], [1, 1])],
    )
    out = m.compute()
    assert out["map"] == pytest.approx(51 / 101, abs=1e-6)
    assert out["map_50"] == pytest.approx(51 / 101, abs=1e-6)


def test_map_iou_062_counts_at_three_of_ten_thresholds() -> None:
    # IoU = (100 * 62) / (100 * 100) = 0.62 -> a match at IoU thresholds .50, .55, .60 only
    m = DetectionMAP()
    m.update(
        [{"boxes": np.array([[0, 0, 100, 62]]), "scores": np.array([0.5]), "labels": np.array([3])}],
        [_gt([[0, 0, 100, 100]], [3])],
    )
    out = m.compute()
    assert out["map"] == pytest.approx(0.3, abs=1e-6)
    assert out["map_50"] == pytest.approx(1.0) and out["map_75"] == pytest.approx(0.0)
    m.reset()
    assert m.num_images == 0


def test_map_wrong_label_scores_zero() -> None:
    m = DetectionMAP()
    m.update([_pred([[0, 0, 10, 10]], [0.9], [2])], [_gt([[0, 0, 10, 10]], [1])])
    assert m.compute()["map"] == pytest.approx(0.0)


def test_map_backends_agree_on_random_detections() -> None:
    """The fast COCOeval port gives pycocotools' figures to the last digit on messy input:
    several classes, crowded overlapping boxes, misses, false positives, empty images."""
    rng = np.random.default_rng(7)
    preds, targets = [], []
    for i in range(60):
        n_gt = int(rng.integers(0, 6))
        xy = rng.uniform(0, 200, (n_gt, 2))
        gt = np.concatenate([xy, xy + rng.uniform(5, 60, (n_gt, 2))], axis=1)
        labels = rng.integers(1, 5, n_gt)
        keep = rng.random(n_gt) < 0.7
        jitter = gt[keep] + rng.normal(0, 4, (int(keep.sum()), 4))
        n_fp = int(rng.integers(0, 4))
        fxy = rng.uniform(0, 200, (n_fp, 2))
        fp = np.concatenate([fxy, fxy + rng.uniform(5, 40, (n_fp, 2))], axis=1)
        boxes = np.concatenate([jitter, fp]).tolist() if i % 9 else []
        lab = np.concatenate([labels[keep], rng.integers(1, 5, n_fp)]).tolist() if i % 9 else []
        preds.append(_pred(boxes, rng.uniform(0.05, 1, len(boxes)).tolist(), lab))
        targets.append(_gt(gt.tolist(), labels.tolist()))
    outs = []
    for backend in ("pycocotools", "faster_coco_eval"):
        m = DetectionMAP(backend=backend)
        m.update(preds, targets)
        outs.append(m.compute())
    slow, fast = outs
    assert 0.05 < slow["map"] < 0.95
    for key in (
        "map",
        "map_50",
        "map_75",
        "map_small",
        "map_medium",
        "map_large",
        "mar_1",
        "mar_10",
        "mar_100",
    ):
        assert fast[key] == pytest.approx(slow[key], abs=1e-12), key


def test_depth_and_disparity_rmse_over_valid_pixels() -> None:
    target = np.array([[10.0, 20.0], [0.0, 40.0]], np.float32)  # one invalid pixel
    pred = np.array([[12.0, 20.0], [99.0, 36.0]], np.float32)
    m = DepthRMSE(focal_baseline=100.0)
    m.update(TaskResult(depth=pred), target)
    out = m.compute()
    assert out["depth_rmse"] == pytest.approx(math.sqrt((4 + 0 + 16) / 3))
    d_err = [100 / 12 - 100 / 10, 0.0, 100 / 36 - 100 / 40]
    assert out["disparity_rmse"] == pytest.approx(math.sqrt(sum(e * e for e in d_err) / 3))
    assert out["valid_pixels"] == 3


def test_depth_rmse_pools_pixels_across_batches_and_caps_depth() -> None:
    m = DepthRMSE(max_depth=30.0)
    m.update(torch.tensor([[[1.0, 2.0]]]), torch.tensor([[[2.0, 2.0]]]))  # errors 1, 0
    m.update(torch.tensor([[[5.0, 0.0, 50.0]]]), torch.tensor([[[3.0, 7.0, 40.0]]]))  # 2, 7; 40 m > cap
    out = m.compute()
    assert out["depth_rmse"] == pytest.approx(math.sqrt((1 + 0 + 4 + 49) / 4))
    assert "disparity_rmse" not in out
    with pytest.raises(ValueError, match="differ in size"):
        m.update(np.zeros((2, 2), np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="no valid pixels"):
        DepthRMSE().compute()


def test_miou_hand_computed_with_ignore() -> None:
    target = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 0]])
    # class 0: TP 1, FP 1 (pred 0 where 2), FN 1 -> 1/3 ; class 1: TP 2, FP 1 -> 2/3 ; class 2: TP 1, FN 1 -> 1/2
    m = MeanIoU(num_classes=4)
    m.update(TaskResult(seg=pred.astype(np.int64)), torch.from_numpy(target))
    out = m.compute()
    assert out["iou_per_class"][:3] == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert math.isnan(out["iou_per_class"][3])  # absent everywhere: left out of the mean
    assert out["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_miou_agrees_with_torchmetrics_on_random_maps() -> None:
    from torchmetrics.classification import MulticlassJaccardIndex

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (3, 16, 16), generator=g)
    pred = torch.where(
        torch.rand(3, 16, 16, generator=g) < 0.6, target, torch.randint(0, 5, (3, 16, 16), generator=g)
    )
    target[:, :2] = 255
    ours = MeanIoU(num_classes=5)
    ours.update(pred, target)
    ref = MulticlassJaccardIndex(num_classes=5, ignore_index=255, average="macro")
    assert ours.compute()["miou"] == pytest.approx(ref(pred, target).item(), abs=1e-6)


def test_miou_rejects_out_of_range_ids() -> None:
    m = MeanIoU(num_classes=3)
    with pytest.raises(ValueError):
        m.update(np.array([[0, 1]]), np.array([[0, 7]]))


def test_psnr_known_value_uint8_and_float() -> None:
    a = np.full((8, 8, 3), 100, np.uint8)
    b = np.full((8, 8, 3), 110, np.uint8)
    p = PSNR()
    p.update(b, a)
    assert p.compute()["psnr"] == pytest.approx(20 * math.log10(255 / 10), abs=1e-9)
    q = PSNR(data_range=1.0)
    x = torch.zeros(2, 3, 4, 4)
    y = x.clone()
    y[0] += 0.1  # MSE 0.01 -> 20 dB
    y[1] += 0.01  # MSE 1e-4 -> 40 dB
    q.update(y, x)
    assert q.compute() == {"psnr": pytest.approx(30.0), "images": 2.0}
    q.update(x[:1], x[:1])
    assert q.compute()["psnr"] == pytest.approx((20 + 40 + 100) / 3)  # exact copy scores max_db


def test_msssim_identity_and_degradation() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 192, 192, generator=g)
    m = MSSSIM()
    m.update(x, x)
    assert m.compute()["ms_ssim"] == pytest.approx(1.0, abs=1e-5)
    m.reset()
    m.update((x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1), x)
    assert m.compute()["ms_ssim"] < 0.95


def test_bits_per_pixel() -> None:
    assert bits_per_pixel(600, 192, 256) == pytest.approx(8 * 600 / (192 * 256))
    with pytest.raises(ValueError):
        bits_per_pixel(1, 0, 5)
