"""Shapes, losses, gradients and decoding of the small CPU task models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from layercast.shared.tasks import TaskResult, get_task_model
from layercast.shared.tasks.dense_ops import CITYSCAPES_FOCAL_BASELINE
from layercast.shared.tasks.small_detector import DetectorRaw


def _targets_det() -> list[dict]:
    return [
        {
            "boxes": torch.tensor([[4.0, 6.0, 40.0, 30.0], [30.0, 20.0, 60.0, 44.0]]),
            "labels": torch.tensor([1, 2]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]


@pytest.mark.parametrize("name", ["small_detector", "small_depth", "small_segmenter"])
def test_small_models_are_small(name: str) -> None:
    assert 100_000 < get_task_model(name).num_parameters() < 2_000_000


def test_small_detector_forward_loss_backward() -> None:
    torch.manual_seed(0)
    model = get_task_model("small_detector", num_classes=3)
    images = torch.rand(2, 3, 48, 64, requires_grad=True)
    raw = model(images)
    assert raw.heatmap.shape == (2, 3, 12, 16) and raw.boxes.shape == (2, 4, 12, 16)
    loss = model.loss(raw, _targets_det())
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert images.grad is not None and images.grad.abs().sum() > 0  # differentiable w.r.t. the input
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad
    )


def test_small_detector_rejects_bad_labels() -> None:
    model = get_task_model("small_detector", num_classes=2)
    raw = model(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="labels must be in 1..2"):
        model.loss(raw, [{"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "labels": torch.tensor([3])}])


def test_small_detector_postprocess_decodes_a_known_peak() -> None:
    model = get_task_model("small_detector", num_classes=2, score_threshold=0.5)
    heat = torch.full((1, 2, 6, 8), -10.0)
    heat[0, 1, 2, 3] = 5.0  # class 2, cell (y=2, x=3)
    boxes = torch.zeros(1, 4, 6, 8)
    boxes[0, :, 2, 3] = torch.tensor([8.0, 4.0, 20.0, 16.0])
    raw = DetectorRaw(heat, boxes, input_size=(24, 32))
    (res,) = model.postprocess(raw, [(48, 64)])  # decoded at twice the input size
    assert isinstance(res, TaskResult)
    np.testing.assert_allclose(res.boxes, [[16.0, 8.0, 40.0, 32.0]])
    assert res.labels.tolist() == [2]
    assert res.scores.dtype == np.float32 and res.scores[0] == pytest.approx(1 / (1 + math.exp(-5)), rel=1e-6)


def test_small_detector_predict_types_and_limits() -> None:
    model = get_task_model("small_detector", num_classes=4, score_threshold=0.0, max_detections=7)
    results = model.predict(torch.rand(3, 3, 40, 56))
    assert len(results) == 3 and model.training  # predict restores the mode
    for r in results:
        assert r.boxes.dtype == np.float32 and r.labels.dtype == np.int64 and r.scores.dtype == np.float32
        assert r.num_detections == 7
        assert (r.labels >= 1).all() and (r.labels <= 4).all()
        assert (r.boxes[:, [0, 2]] >= 0).all() and (r.boxes[:, [0, 2]] <= 56).all()
        assert np.all(np.diff(r.scores) <= 0)


def test_small_depth_forward_loss_and_metres() -> None:
    model = get_task_model("small_depth")
    images = torch.rand(2, 3, 40, 56)
    raw = model(images)
    assert raw.shape == (2, 1, 40, 56) and (raw > 0).all()
    depth = torch.full((2, 40, 56), 10.0)
    depth[:, :5] = 0  # invalid rows
    loss = model.loss(raw, depth)
    assert torch.isfinite(loss)
    loss.backward()
    # a constant normalised disparity of 1 is 128 px, i.e. fB / 128 metres, at any output size
    (res,) = model.postprocess(torch.ones(1, 1, 10, 14), [(20, 28)])
    assert res.depth is not None and res.depth.shape == (20, 28) and res.depth.dtype == np.float32
    np.testing.assert_allclose(res.depth, CITYSCAPES_FOCAL_BASELINE / 128.0, rtol=1e-5)


def test_small_depth_loss_is_zero_at_the_truth_and_ignores_invalid() -> None:
    model = get_task_model("small_depth", focal_baseline=100.0, disparity_scale=10.0)
    depth = torch.tensor([[[5.0, 0.0], [20.0, 10.0]]])
    exact = torch.tensor([[[[2.0, 123.0], [0.5, 1.0]]]])  # 100 / (d * 10); the invalid pixel is arbitrary
    assert model.loss(exact, depth).item() == pytest.approx(0.0, abs=1e-7)
    off = exact + torch.tensor([[[[0.3, 0.0], [0.0, 0.0]]]])
    assert model.loss(off, depth).item() == pytest.approx(0.3 / 3, rel=1e-5)


def test_small_segmenter_forward_loss_postprocess() -> None:
    model = get_task_model("small_segmenter")
    raw = model(torch.rand(2, 3, 40, 56))
    assert raw.shape == (2, 19, 40, 56)
    labels = torch.randint(0, 19, (2, 40, 56))
    labels[:, :10] = 255
    loss = model.loss(raw, labels)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    all_ignored = model.loss(model(torch.rand(1, 3, 64, 64)), torch.full((1, 64, 64), 255))
    assert all_ignored.item() == 0.0
    logits = torch.zeros(1, 19, 4, 4)
    logits[0, 7] = 1.0
    (res,) = model.postprocess(logits, [(8, 8)])
    assert res.seg is not None and res.seg.dtype == np.int64 and res.seg.shape == (8, 8)
    assert (res.seg == 7).all()


def test_small_detector_loss_decreases_quickly() -> None:
    torch.manual_seed(0)
    model = get_task_model("small_detector", num_classes=2)
    images = torch.rand(1, 3, 64, 96) * 0.2 + 0.4
    images[0, :, 8:40, 10:50] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)
    targets = [{"boxes": torch.tensor([[10.0, 8.0, 50.0, 40.0]]), "labels": torch.tensor([1])}]
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        loss = model.loss(model(images), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
