"""The small detector's targets, and that it learns a synthetic scene."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_iou

from layercast.shared.tasks import get_task_model
from layercast.shared.tasks.detector_targets import build_targets


def test_targets_single_box() -> None:
    box = torch.tensor([[8.0, 4.0, 40.0, 28.0]])  # 32x24 px, centre (24, 16) -> cell (6, 4) at stride 4
    t = build_targets([{"boxes": box, "labels": torch.tensor([2])}], 3, (12, 16), 4)
    assert t.num_boxes == 1
    assert t.heatmap[0, 1, 4, 6] == 1.0 and t.heatmap[0, 1].eq(1).sum() == 1
    assert t.heatmap[0, 0].sum() == 0 and t.heatmap[0, 2].sum() == 0
    assert t.weights.sum().item() == pytest.approx(math.log(32 * 24), rel=1e-5)
    region = t.weights[0] > 0
    assert torch.equal(t.boxes[0][:, region], box.T.expand(4, int(region.sum())))
    assert t.weights[0, 4, 6] == t.weights[0].max()  # the centre weighs most


def test_targets_smaller_box_wins_overlap_and_degenerate_boxes_are_dropped() -> None:
    big = [0.0, 0.0, 64.0, 48.0]
    small = [20.0, 16.0, 36.0, 28.0]
    flat = [5.0, 5.0, 5.0, 9.0]
    target = {"boxes": torch.tensor([small, big, flat]), "labels": torch.tensor([1, 1, 1])}
    t = build_targets([target], 1, (12, 16), 4)
    assert t.num_boxes == 2
    assert torch.equal(t.boxes[0, :, 5, 7], torch.tensor(small))  # small box centre cell keeps the small box


def _scene() -> tuple[torch.Tensor, list[dict]]:
    g = torch.Generator().manual_seed(1)
    img = torch.rand(3, 192, 256, generator=g) * 0.2 + 0.4
    boxes = torch.tensor(
        [[20.0, 30.0, 90.0, 110.0], [140.0, 60.0, 200.0, 100.0], [100.0, 120.0, 240.0, 180.0]]
    )
    colours = [(0.9, 0.1, 0.1), (0.1, 0.8, 0.2), (0.1, 0.2, 0.9)]
    for (x1, y1, x2, y2), c in zip(boxes.int().tolist(), colours, strict=True):
        img[:, y1:y2, x1:x2] = torch.tensor(c).view(3, 1, 1)
    return img[None], [{"boxes": boxes, "labels": torch.tensor([1, 3, 2])}]


@pytest.mark.slow
def test_small_detector_overfits_one_scene() -> None:
    torch.manual_seed(0)
    images, targets = _scene()
    model = get_task_model("small_detector", num_classes=3)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(200):
        loss = model.loss(model(images), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    (res,) = model.predict(images)
    top = torch.from_numpy(res.boxes[:3])
    iou = box_iou(top, targets[0]["boxes"])
    best = iou.argmax(dim=1)
    assert sorted(best.tolist()) == [0, 1, 2]  # each object found once among the top 3
    assert (iou.max(dim=1).values > 0.7).all()
    assert res.labels[:3].tolist() == targets[0]["labels"][best].tolist()
    assert (res.scores[:3] > 0.5).all()
    assert res.num_detections == 3 or res.scores[3] < 0.5 * res.scores[2]
