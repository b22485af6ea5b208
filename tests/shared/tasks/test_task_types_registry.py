"""TaskResult validation and the task-model registry."""

from __future__ import annotations

import numpy as np
import pytest

from layercast.shared.errors import UnknownModel
from layercast.shared.tasks import (
    TaskResult,
    get_task_model,
    list_task_models,
    register_task_model,
    task_model_spec,
)


def test_task_result_defaults_are_empty_detections() -> None:
    r = TaskResult()
    assert r.boxes.shape == (0, 4) and r.boxes.dtype == np.float32
    assert r.labels.dtype == np.int64 and r.scores.dtype == np.float32
    assert r.depth is None and r.seg is None and r.num_detections == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {
            "boxes": np.zeros((2, 4), np.float64),
            "labels": np.zeros(2, np.int64),
            "scores": np.zeros(2, np.float32),
        },
        {
            "boxes": np.zeros((2, 4), np.float32),
            "labels": np.zeros(3, np.int64),
            "scores": np.zeros(2, np.float32),
        },
        {
            "boxes": np.zeros((2, 4), np.float32),
            "labels": np.zeros(2, np.int32),
            "scores": np.zeros(2, np.float32),
        },
        {
            "boxes": np.zeros((2, 5), np.float32),
            "labels": np.zeros(2, np.int64),
            "scores": np.zeros(2, np.float32),
        },
        {"depth": np.zeros((4, 4), np.float64)},
        {"seg": np.zeros((4, 4), np.uint8)},
        {"seg": np.zeros((1, 4, 4), np.int64)},
    ],
)
def test_task_result_rejects_wrong_types(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        TaskResult(**kwargs)


def test_registry_lists_both_families_by_task() -> None:
    names = list_task_models()
    for name in [
        "fasterrcnn_resnet50_fpn_v2",
        "lraspp_mobilenet_v3_large",
        "deeplabv3_resnet50",
        "small_detector",
        "small_depth",
        "small_segmenter",
    ]:
        assert name in names
    assert list_task_models("detection") == ["fasterrcnn_resnet50_fpn_v2", "small_detector"]
    assert list_task_models("depth") == ["lraspp_mobilenet_v3_large", "small_depth"]
    assert list_task_models("segmentation") == ["deeplabv3_resnet50", "small_segmenter"]
    assert task_model_spec("small_detector").description


def test_registry_builds_with_kwargs_and_sets_task() -> None:
    det = get_task_model("small_detector", num_classes=7)
    assert det.task == "detection" and det.num_classes == 7
    assert get_task_model("small_segmenter").task == "segmentation"
    assert get_task_model("small_depth").task == "depth"


def test_registry_unknown_name_is_typed_error() -> None:
    with pytest.raises(UnknownModel, match="no_such_model"):
        get_task_model("no_such_model")


def test_registry_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @register_task_model("small_detector", task="detection")
        def _again() -> None:  # pragma: no cover - never built
            raise AssertionError
