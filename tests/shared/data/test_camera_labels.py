"""Camera model, disparity encoding and the label tables."""

from __future__ import annotations

import numpy as np
import pytest

from layercast.shared.data.camera import (
    CITYSCAPES_BASELINE,
    PinholeCamera,
    cityscapes_focal,
    decode_disparity_png,
    depth_to_disparity,
    disparity_to_depth,
    encode_disparity_png,
)
from layercast.shared.data.labels import (
    CITYSCAPES_LABELS,
    COCO,
    IGNORE_INDEX,
    LABEL_TO_TRAIN,
    NUM_TRAIN_CLASSES,
    TRAIN_CLASS_NAMES,
    coco_categories,
    label_ids_to_train_ids,
)


def test_focal_scales_with_width():
    assert cityscapes_focal(2048) == pytest.approx(2262.52)
    assert cityscapes_focal(256) == pytest.approx(2262.52 / 8)


def test_disparity_png_round_trip_within_quantisation():
    rng = np.random.default_rng(0)
    depth = rng.uniform(2.0, 400.0, (64, 64)).astype(np.float32)
    depth[:4] = 0  # invalid
    f = cityscapes_focal(256)
    disp = depth_to_disparity(depth, CITYSCAPES_BASELINE, f)
    p = encode_disparity_png(disp)
    assert p.dtype == np.uint16
    assert (p[:4] == 0).all() and (p[4:] >= 1).all()
    back = decode_disparity_png(p)
    assert np.abs(back - disp).max() <= 0.5 / 256 + 1e-6
    depth2 = disparity_to_depth(back, CITYSCAPES_BASELINE, f)
    valid = depth > 0
    # relative depth error is bounded by the disparity quantisation step relative to disparity
    bound = (0.5 / 256) / disp[valid] * 1.01 + 1e-6
    assert (np.abs(depth2[valid] - depth[valid]) / depth[valid] <= bound).all()
    assert (depth2[~valid] == 0).all()


def test_cityscapes_encoding_convention():
    # p = d * 256 + 1; p = 0 is invalid; p = 1 is zero disparity (infinitely far, no depth)
    assert encode_disparity_png(np.array([0.0, 1.0, 10.5]))[1:].tolist() == [257, 2689]
    np.testing.assert_array_equal(decode_disparity_png(np.array([0, 1, 257], np.uint16)), [0.0, 0.0, 1.0])
    assert disparity_to_depth(np.array([0.0], np.float32), 0.2, 100.0)[0] == 0


def test_ground_depth_matches_projection():
    cam = PinholeCamera.cityscapes_like(256, 192, horizon=80, height=1.5)
    v = np.array([100.0, 150.0, 191.0])
    z = cam.ground_depth(v)
    for vi, zi in zip(v, z, strict=True):
        assert cam.project(3.0, 0.0, zi)[1] == pytest.approx(vi)
    assert np.isinf(cam.ground_depth(np.array([50.0]))).all()


def test_train_id_table_is_the_official_one():
    assert NUM_TRAIN_CLASSES == 19 and len(TRAIN_CLASS_NAMES) == 19
    table = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
             24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip
    for label_id in range(256):
        assert LABEL_TO_TRAIN[label_id] == table.get(label_id, IGNORE_INDEX)
    assert TRAIN_CLASS_NAMES[0] == "road" and TRAIN_CLASS_NAMES[18] == "bicycle"
    ids = np.array([[0, 7], [23, 33]], np.uint8)
    np.testing.assert_array_equal(label_ids_to_train_ids(ids), [[255, 0], [10, 18]])
    assert len({lab.id for lab in CITYSCAPES_LABELS}) == len(CITYSCAPES_LABELS)


def test_coco_ids_are_real():
    assert COCO == {
        "person": 1, "bicycle": 2, "car": 3, "motorcycle": 4, "bus": 6, "truck": 8, "traffic light": 10, "stop sign": 13,
    }  # fmt: skip
    assert {c["supercategory"] for c in coco_categories()} == {"person", "vehicle", "outdoor"}
