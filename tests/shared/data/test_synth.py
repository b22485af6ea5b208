"""The synthetic scene renderer: determinism, ground-truth consistency, video coherence."""

from __future__ import annotations

import numpy as np
import pytest

from layercast.shared.data.camera import CITYSCAPES_BASELINE, cityscapes_focal
from layercast.shared.data.labels import CLASS_BY_COCO_ID, CS
from layercast.shared.data.synth import MIN_BOX_SIDE, SyntheticCamera, render_scene

SEEDS = range(12)


@pytest.fixture(scope="module")
def scenes():
    return [render_scene(s) for s in SEEDS]


def test_same_seed_same_bytes():
    a, b = render_scene(1234), render_scene(1234)
    for field in ("image", "boxes", "labels", "depth", "disparity", "label_ids", "instances"):
        assert getattr(a, field).tobytes() == getattr(b, field).tobytes(), field


def test_different_seeds_differ():
    assert render_scene(1).image.tobytes() != render_scene(2).image.tobytes()


def test_shapes_and_dtypes(scenes):
    s = scenes[0]
    assert s.image.shape == (192, 256, 3) and s.image.dtype == np.uint8
    assert s.depth.shape == s.disparity.shape == s.label_ids.shape == (192, 256)
    assert s.depth.dtype == s.disparity.dtype == np.float32
    assert s.label_ids.dtype == np.uint8
    assert s.boxes.dtype == np.float32 and s.boxes.shape[1] == 4
    assert s.labels.dtype == np.int64 and len(s.labels) == len(s.boxes)


def test_other_sizes():
    s = render_scene(5, width=128, height=96)
    assert s.image.shape == (96, 128, 3)
    assert s.camera.focal == pytest.approx(cityscapes_focal(128))


def test_boxes_inside_image_and_not_tiny(scenes):
    for s in scenes:
        b = s.boxes
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
        assert (b[:, 2] <= s.width).all() and (b[:, 3] <= s.height).all()
        assert (b[:, 2] - b[:, 0] >= MIN_BOX_SIDE).all() and (b[:, 3] - b[:, 1] >= MIN_BOX_SIDE).all()


def test_boxes_are_the_visible_extent_and_labels_match(scenes):
    for s in scenes:
        for i, ((x0, y0, x1, y1), cat) in enumerate(zip(s.boxes.astype(int), s.labels, strict=True)):
            rows, cols = np.nonzero(s.instances == i + 1)
            assert rows.size > 0
            assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x0, y0, x1, y1)
            # every visible pixel of the object carries the Cityscapes label of its COCO class
            expected = CLASS_BY_COCO_ID[int(cat)].cityscapes_id
            assert (s.label_ids[rows, cols] == expected).all()
        assert s.instances.max() == len(s.boxes)


def test_many_classes_are_annotated(scenes):
    seen = {int(c) for s in scenes for c in s.labels}
    assert len(seen) >= 5, seen
    assert seen <= set(CLASS_BY_COCO_ID)


def test_ground_depth_follows_the_camera_and_grows_towards_the_horizon(scenes):
    for s in scenes:
        cam = s.camera
        ground = np.isin(s.label_ids, [CS["road"], CS["sidewalk"], CS["terrain"]])
        rows, cols = np.nonzero(ground)
        expected = cam.focal * cam.height / (rows - cam.cy)
        np.testing.assert_allclose(s.depth[rows, cols], expected, rtol=1e-4)
        # down the column with the most ground, depth strictly grows going up towards the horizon
        col = int(np.argmax(ground.sum(axis=0)))
        ground_rows = np.flatnonzero(ground[:, col])
        d = s.depth[ground_rows, col]
        assert ground_rows.size > 10 and (np.diff(d) < 0).all()
        assert ground_rows.min() > cam.cy


def test_sky_is_invalid_and_the_rest_has_depth(scenes):
    for s in scenes:
        sky = s.label_ids == CS["sky"]
        assert sky.any()
        assert (s.depth[sky] == 0).all() and (s.disparity[sky] == 0).all()
        assert (s.depth[~sky] > 0).all()


def test_disparity_uses_cityscapes_rig(scenes):
    s = scenes[3]
    valid = s.depth > 0
    bf = CITYSCAPES_BASELINE * cityscapes_focal(s.width)
    np.testing.assert_allclose(s.disparity[valid] * s.depth[valid], bf, rtol=1e-5)


def test_objects_take_the_depth_of_their_ground_contact(scenes):
    for s in scenes:
        for i in range(len(s.boxes)):
            d = s.depth[s.instances == i + 1]
            assert np.ptp(d) == 0  # a billboard: one depth
            # its contact row is at or below the box bottom (the bottom may be hidden or off-frame)
            contact_row = s.camera.ground_row(float(d[0]))
            assert contact_row >= s.boxes[i, 3] - 2


def test_occlusion_is_real():
    # across a few scenes some annotated object is partly hidden: its box holds pixels of other things
    partly_hidden = 0
    for seed in range(8):
        s = render_scene(seed)
        for i, (x0, y0, x1, y1) in enumerate(s.boxes.astype(int)):
            inside = s.instances[y0:y1, x0:x1]
            other = (inside > 0) & (inside != i + 1)
            partly_hidden += bool(other.any())
    assert partly_hidden > 0


def test_camera_video_is_deterministic_and_coherent():
    cam = SyntheticCamera(seed=9, width=256, height=192, fps=10)
    first = next(cam)
    second = next(cam)
    again = SyntheticCamera(seed=9, width=256, height=192, fps=10).frame(1)
    assert second.image.tobytes() == again.image.tobytes()
    # 0.1 s apart: the labels barely change; 3 s apart: objects have moved
    changed = (first.label_ids != second.label_ids).mean()
    later = cam.frame(30)
    assert 0 < changed < 0.05
    assert (first.label_ids != later.label_ids).mean() > changed
    # the static street is identical apart from sensor grain
    static = (first.label_ids == later.label_ids) & np.isin(first.label_ids, [CS["building"], CS["sky"]])
    diff = np.abs(first.image.astype(int) - later.image.astype(int))[static]
    assert np.median(diff) <= 3
