"""A tiny split written in the COCO / Cityscapes layouts and read back through the loaders."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from layercast.shared.data.camera import decode_disparity_png
from layercast.shared.data.cityscapes import Cityscapes, read_disparity
from layercast.shared.data.coco import CocoDetection
from layercast.shared.data.labels import CLASS_BY_COCO_ID, label_ids_to_train_ids
from layercast.shared.data.synth import render_scene
from layercast.shared.data.writers import cityscapes_stem, generate, image_id, scene_seed

N_TRAIN, N_VAL, SEED = 4, 2, 11


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    summary = generate(root, N_TRAIN, N_VAL, 256, 192, seed=SEED, progress=False)
    return root, summary


def scene(split_name, index):
    return render_scene(scene_seed(SEED, split_name, index), 256, 192)


def test_layout_and_summary(split):
    root, summary = split
    assert [(s.split, s.images) for s in summary.splits] == [("train", N_TRAIN), ("val", N_VAL)]
    for s, n in (("train", N_TRAIN), ("val", N_VAL)):
        assert len(list((root / "coco" / f"{s}2017").glob("*.png"))) == n
        assert (root / "coco" / "annotations" / f"instances_{s}2017.json").is_file()
        assert len(list((root / "cityscapes" / "leftImg8bit" / s).glob("*/*_leftImg8bit.png"))) == n
        assert len(list((root / "cityscapes" / "disparity" / s).glob("*/*_disparity.png"))) == n
        assert len(list((root / "cityscapes" / "gtFine" / s).glob("*/*_gtFine_labelIds.png"))) == n
    info = json.loads((root / "synth_info.json").read_text())
    assert info["seed"] == SEED and info["splits"]["val"]["images"] == N_VAL


def test_coco_json_has_real_fields(split):
    root, _ = split
    data = json.loads((root / "coco" / "annotations" / "instances_val2017.json").read_text())
    assert set(data) >= {"info", "licenses", "images", "annotations", "categories"}
    img = data["images"][0]
    assert (
        set(img) >= {"id", "file_name", "width", "height"}
        and img["file_name"] == f"{image_id('val', 0):012d}.png"
    )
    ann = data["annotations"][0]
    assert set(ann) >= {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation"}
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
    assert {c["id"] for c in data["categories"]} == {1, 2, 3, 4, 6, 8, 10, 13}


def test_files_hold_the_rendered_scene(split):
    root, _ = split
    s = scene("val", 1)
    city, stem = cityscapes_stem("val", 1, N_VAL)
    left = root / "cityscapes" / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png"
    coco_img = root / "coco" / "val2017" / f"{image_id('val', 1):012d}.png"
    assert np.array_equal(np.asarray(Image.open(left)), s.image)
    assert os.path.samefile(left, coco_img) or left.read_bytes() == coco_img.read_bytes()
    with Image.open(root / "cityscapes" / "disparity" / "val" / city / f"{stem}_disparity.png") as im:
        assert im.mode in ("I;16", "I")
        p = np.asarray(im)
    assert np.abs(decode_disparity_png(p) - s.disparity).max() <= 0.5 / 256 + 1e-6
    assert ((p == 0) == (s.disparity == 0)).all()
    with Image.open(root / "cityscapes" / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png") as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), s.label_ids)
    with Image.open(root / "cityscapes" / "gtFine" / "val" / city / f"{stem}_gtFine_instanceIds.png") as im:
        inst = np.asarray(im).astype(np.int64)
    assert np.array_equal(np.where(inst >= 1000, inst // 1000, inst), s.label_ids)
    # Cityscapes gives instances to people and vehicles, not to traffic lights and signs
    with_instances = [
        c for c in s.labels if CLASS_BY_COCO_ID[int(c)].cityscapes_id in (24, 26, 27, 28, 32, 33)
    ]
    assert len(np.unique(inst[inst >= 1000])) == len(with_instances) > 0


def test_coco_loader_reads_back_boxes_and_labels(split):
    root, _ = split
    ds = CocoDetection(root / "coco", "val")
    assert len(ds) == N_VAL
    assert ds.class_names[1:] == [
        "person",
        "bicycle",
        "car",
        "motorcycle",
        "bus",
        "truck",
        "traffic light",
        "stop sign",
    ]
    for i in range(N_VAL):
        image, target = ds[i]
        s = scene("val", i)
        assert image.shape == (3, 192, 256) and image.dtype == torch.float32
        assert torch.allclose(image, torch.from_numpy(s.image).permute(2, 0, 1).float() / 255)
        np.testing.assert_allclose(target["boxes"].numpy(), s.boxes)
        cats = [ds.label_to_cat_id[int(lab)] for lab in target["labels"]]
        assert cats == s.labels.tolist()
        assert target["image_id"] == image_id("val", i)
    raw = CocoDetection(root / "coco", "val", label_mode="coco")
    assert raw[0][1]["labels"].tolist() == scene("val", 0).labels.tolist()


def test_coco_segmentation_masks_decode(split):
    root, _ = split
    ds = CocoDetection(root / "coco", "train")
    s = scene("train", 0)
    anns = ds.coco.loadAnns(ds.coco.getAnnIds(imgIds=[image_id("train", 0)]))
    assert len(anns) == len(s.boxes)
    for k, ann in enumerate(anns):
        mask = ds.coco.annToMask(ann)
        assert np.array_equal(mask.astype(bool), s.instances == k + 1)
        assert ann["area"] == mask.sum()


def test_cityscapes_loader_depth_and_segmentation(split):
    root, _ = split
    ds = Cityscapes(root / "cityscapes", "train")
    assert len(ds) == N_TRAIN
    for k in (0, N_TRAIN - 1):
        image, t = ds[k]
        i = int(t["name"].split("_")[-2])  # <city>/<city>_<seq>_<frame>: seq is the scene index
        assert i == k  # cities are named so that sorted paths follow the index
        s = scene("train", i)
        assert image.shape == (3, 192, 256)
        np.testing.assert_array_equal(t["semantic"].numpy(), label_ids_to_train_ids(s.label_ids))
        valid = t["valid"].numpy()
        assert np.array_equal(valid, s.depth > 0)
        depth = t["depth"].numpy()
        rel = np.abs(depth[valid] - s.depth[valid]) / s.depth[valid]
        assert rel.max() <= (0.5 / 256) / s.disparity[valid].min() + 1e-4
        assert (depth[~valid] == 0).all()
        assert t["name"].endswith("_000019")


def test_cityscapes_without_camera_json_uses_scaled_cityscapes_rig(split, tmp_path):
    root, _ = split
    ds = Cityscapes(root / "cityscapes", "val")
    paths = ds.paths(0)
    disparity = read_disparity(paths["disparity"])
    # same folder without camera files: the default rig is Cityscapes' scaled to the width
    import shutil

    copy = tmp_path / "cs"
    shutil.copytree(root / "cityscapes", copy, ignore=shutil.ignore_patterns("*_camera.json"))
    _, t = Cityscapes(copy, "val", targets=("depth",))[0]
    _, t_ref = ds[0]
    assert torch.allclose(t["depth"], t_ref["depth"])
    assert "semantic" not in t and disparity.shape == (192, 256)


def test_generation_is_deterministic(split, tmp_path):
    root, _ = split
    generate(tmp_path, N_TRAIN, 0, 256, 192, seed=SEED, progress=False)
    a = (root / "coco" / "annotations" / "instances_train2017.json").read_bytes()
    b = (tmp_path / "coco" / "annotations" / "instances_train2017.json").read_bytes()
    assert a == b
    name = f"{image_id('train', 2):012d}.png"
    assert (root / "coco" / "train2017" / name).read_bytes() == (
        tmp_path / "coco" / "train2017" / name
    ).read_bytes()


def test_real_style_coco_with_jpeg_crowd_and_sparse_ids(tmp_path):
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations").mkdir()
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(
        tmp_path / "val2017" / "000000000139.jpg", quality=95
    )
    data = {
        "images": [{"id": 139, "file_name": "000000000139.jpg", "width": 60, "height": 40}],
        "annotations": [
            {"id": 1, "image_id": 139, "category_id": 90, "bbox": [5, 6, 10, 8], "area": 80, "iscrowd": 0,
             "segmentation": [[5, 6, 15, 6, 15, 14, 5, 14]]},
            {"id": 2, "image_id": 139, "category_id": 1, "bbox": [50, 30, 20, 20], "area": 100, "iscrowd": 0,
             "segmentation": [[50, 30, 60, 30, 60, 40]]},
            {"id": 3, "image_id": 139, "category_id": 1, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 1,
             "segmentation": {"size": [40, 60], "counts": [0, 2400]}},
            {"id": 4, "image_id": 139, "category_id": 1, "bbox": [3, 3, 0, 4], "area": 0, "iscrowd": 0,
             "segmentation": [[3, 3, 3, 7, 3, 7]]},
        ],
        "categories": [{"id": 1, "name": "person", "supercategory": "person"},
                       {"id": 90, "name": "toothbrush", "supercategory": "indoor"}],
    }  # fmt: skip
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    ds = CocoDetection(tmp_path, "val")
    image, t = ds[0]
    assert image.shape == (3, 40, 60)
    # crowd and empty boxes dropped; the box past the border clipped; ids 1, 90 -> labels 1, 2
    assert t["labels"].tolist() == [2, 1]
    assert t["boxes"].tolist() == [[5, 6, 15, 14], [50, 30, 60, 40]]
    assert ds.class_names == ["__background__", "person", "toothbrush"]
