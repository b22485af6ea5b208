"""``layercast data footage``: frames of fixed training cameras as a train split that the training
loaders read, with each frame's own ground truth and no evaluation camera among them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from layercast.cli import main
from layercast.shared.data.clips import write_clips
from layercast.shared.data.synth import SyntheticCamera
from layercast.train.data import make_dataset
from layercast.train.temporal import TRAIN_SEED0

SIZE = (128, 96)


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    out = tmp_path_factory.mktemp("footage")
    args = ["data", "footage", "--out", str(out), "--cameras", "2", "--frames", "2", "--every", "3"]
    assert main([*args, "--size", "128x96", "--no-progress"]) == 0
    return out


def test_every_frame_loads_through_the_training_loaders_with_its_own_ground_truth(footage):
    det = make_dataset("detection", footage, "train")
    depth = make_dataset("depth", footage, "train")
    assert len(det) == len(depth) == 4
    coco = json.loads((footage / "coco/annotations/instances_train2017.json").read_text())
    images = sorted(coco["images"], key=lambda r: r["id"])
    # image k * frames + j is frame j * every of camera k (seeded TRAIN_SEED0 + k)
    assert [(r["video_id"], r["frame_index"]) for r in images] == [
        (TRAIN_SEED0, 0),
        (TRAIN_SEED0, 3),
        (TRAIN_SEED0 + 1, 0),
        (TRAIN_SEED0 + 1, 3),
    ]
    moved = False
    for i, record in enumerate(images):
        scene = SyntheticCamera(record["video_id"], *SIZE).frame(record["frame_index"])
        image, target = det[i]
        assert image.shape == (3, SIZE[1], SIZE[0])
        assert torch.equal(
            (image * 255).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(scene.image)
        )
        assert torch.allclose(target["boxes"], torch.as_tensor(scene.boxes, dtype=torch.float32), atol=1e-3)
        names = [det.class_names[int(label)] for label in target["labels"]]
        assert names == [det.coco.cats[int(c)]["name"] for c in scene.labels]
        _, dtarget = depth[i]
        valid = dtarget["depth"] > 0
        assert valid.any()
        assert np.allclose(dtarget["depth"][valid].numpy(), scene.depth[valid.numpy()], rtol=0.02)
        if i % 2:
            moved |= not torch.equal(target["boxes"], det[i - 1][1]["boxes"])
    assert moved  # frames of one camera are different moments, not one picture twice
    assert det.class_names == [
        "__background__",
        *(c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])),
    ]


def test_training_cameras_are_not_the_evaluation_cameras(footage, tmp_path):
    info = json.loads((footage / "footage_info.json").read_text())
    clips = json.loads(
        (write_clips(tmp_path / "clips", cameras=2, frames=1, width=64, height=64) / "clips.json").read_text()
    )
    assert info["seeds"] == [TRAIN_SEED0, TRAIN_SEED0 + 1]
    assert not {c["seed"] for c in clips["clips"]} & set(range(info["seeds"][0], info["seeds"][1] + 1))


def test_bad_arguments_are_refused(tmp_path, capsys):
    assert main(["data", "footage", "--out", str(tmp_path), "--every", "0", "--no-progress"]) == 1
    assert "--every must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "coco").exists()
