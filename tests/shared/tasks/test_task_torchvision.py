"""The paper's torchvision models behind the task interface, with local weights only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torchvision.models import mobilenet_v3_large
from torchvision.models.segmentation import lraspp_mobilenet_v3_large

from layercast.shared.errors import ConfigError
from layercast.shared.tasks import get_task_model

# Small inputs and few proposals keep Faster R-CNN's CPU cost to seconds.
FAST_RCNN = {
    "min_size": 64,
    "max_size": 96,
    "rpn_pre_nms_top_n_train": 50,
    "rpn_post_nms_top_n_train": 20,
    "rpn_pre_nms_top_n_test": 50,
    "rpn_post_nms_top_n_test": 10,
    "box_batch_size_per_image": 8,
    "box_score_thresh": 0.0,
}


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a task model tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", refuse)


@pytest.fixture(scope="module")
def frcnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return get_task_model("fasterrcnn_resnet50_fpn_v2", num_classes=3, **FAST_RCNN)


def test_fasterrcnn_train_loss_and_eval_results(frcnn: torch.nn.Module) -> None:
    images = torch.rand(2, 3, 48, 72, requires_grad=True)
    targets = [
        {"boxes": torch.tensor([[5.0, 5.0, 30.0, 40.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    frcnn.train()
    raw = frcnn(images)
    loss = frcnn.loss(raw, targets)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="eval mode"):
        frcnn.postprocess(raw, [(48, 72)] * 2)

    frcnn.eval()
    with torch.no_grad():
        raw = frcnn(images)
    with pytest.raises(ValueError, match="training mode"):
        frcnn.loss(raw, targets)
    results = frcnn.postprocess(raw, [(96, 144), (48, 72)])
    assert len(results) == 2
    for r, (h, w) in zip(results, [(96, 144), (48, 72)], strict=True):
        assert r.boxes.dtype == np.float32 and r.labels.dtype == np.int64 and r.scores.dtype == np.float32
        assert r.num_detections > 0
        assert (r.labels >= 1).all() and (r.labels <= 3).all()
        assert r.boxes[:, [0, 2]].max() <= w + 1e-3 and r.boxes[:, [1, 3]].max() <= h + 1e-3
    # postprocess rescales boxes linearly to the requested size
    same = frcnn.postprocess(raw, [(48, 72), (48, 72)])
    np.testing.assert_allclose(results[0].boxes, 2 * same[0].boxes, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(results[0].labels, same[0].labels)


def test_fasterrcnn_head_has_background_plus_k(frcnn: torch.nn.Module) -> None:
    assert frcnn.model.roi_heads.box_predictor.cls_score.out_features == 4


def test_fasterrcnn_weights_roundtrip_through_a_local_file(frcnn: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "frcnn.pth"
    torch.save(frcnn.model.state_dict(), path)  # a plain torchvision state dict, as torchvision ships them
    again = get_task_model("fasterrcnn_resnet50_fpn_v2", num_classes=3, weights_path=path, **FAST_RCNN)
    for (k, a), b in zip(frcnn.model.state_dict().items(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_missing_weights_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="never downloaded"):
        get_task_model("lraspp_mobilenet_v3_large", weights_path=tmp_path / "absent.pth")


def test_lraspp_depth_shapes_loss_and_metres() -> None:
    model = get_task_model("lraspp_mobilenet_v3_large")
    assert model.task == "depth"
    raw = model(torch.rand(2, 3, 64, 96))
    assert raw.shape == (2, 1, 64, 96)
    loss = model.loss(raw, torch.rand(2, 64, 96) * 50)
    assert torch.isfinite(loss)
    loss.backward()
    res = model.predict(torch.rand(1, 3, 64, 96), [(32, 48)])
    assert res[0].depth is not None and res[0].depth.shape == (32, 48) and res[0].depth.dtype == np.float32
    assert (res[0].depth > 0).all()


def test_lraspp_loads_backbone_and_partial_whole_model_files(tmp_path: Path) -> None:
    torch.manual_seed(1)
    backbone = mobilenet_v3_large(weights=None)
    torch.save(backbone.state_dict(), tmp_path / "mnv3.pth")
    model = get_task_model("lraspp_mobilenet_v3_large", backbone_weights_path=tmp_path / "mnv3.pth")
    assert torch.equal(model.model.backbone["0"][0].weight, backbone.features[0][0].weight)
    assert torch.equal(model.model.backbone["16"][0].weight, backbone.features[16][0].weight)

    # torchvision's segmentation layout (its builder defaults to downloading a backbone: say None)
    seg21 = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21)
    torch.save({"model": seg21.state_dict()}, tmp_path / "lraspp21.pth")
    with pytest.raises(ConfigError, match="mis-shaped"):
        get_task_model("lraspp_mobilenet_v3_large", weights_path=tmp_path / "lraspp21.pth")
    model = get_task_model("lraspp_mobilenet_v3_large", weights_path=tmp_path / "lraspp21.pth", strict=False)
    assert torch.equal(model.model.backbone["0"][0].weight, seg21.backbone["0"][0].weight)
    assert model.model.classifier.low_classifier.weight.shape[0] == 1  # the 21-class head was skipped


def test_deeplabv3_segmentation_shapes_and_ids() -> None:
    model = get_task_model("deeplabv3_resnet50")
    assert model.task == "segmentation"
    raw = model(torch.rand(2, 3, 64, 64))
    assert raw.shape == (2, 19, 64, 64)
    labels = torch.randint(0, 19, (2, 64, 64))
    labels[0] = 255
    loss = model.loss(raw, labels)
    assert torch.isfinite(loss)
    model.eval()
    (res,) = model.postprocess(raw[:1].detach(), [(64, 64)])
    assert res.seg is not None and res.seg.dtype == np.int64 and 0 <= res.seg.min() and res.seg.max() < 19
