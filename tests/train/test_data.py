"""Training augmentation: random crops and left-right flips, with or without crops; the image and
its targets (boxes, depth) always move together; evaluation data is never augmented."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from layercast.shared.data.writers import generate
from layercast.train import data as tdata


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate(root, n_train=3, n_val=1, width=96, height=64, seed=5, progress=False)
    return root


def _mirror_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


def test_whole_image_training_flips_image_and_boxes_together(tiny_data):
    plain = tdata.make_dataset("detection", tiny_data, "train")
    image, target = plain[0]
    assert target["boxes"].numel() > 0
    flipping = tdata.make_dataset("detection", tiny_data, "train", hflip=True)
    torch.manual_seed(0)
    seen = set()
    for _ in range(24):
        im, t = flipping[0]
        assert im.shape == image.shape  # whole images: no crop
        if torch.equal(im, image):
            assert torch.equal(t["boxes"], target["boxes"])
            seen.add("plain")
        else:
            assert torch.equal(im, image.flip(-1))
            torch.testing.assert_close(t["boxes"], _mirror_boxes(target["boxes"], image.shape[-1]))
            assert torch.equal(t["labels"], target["labels"])
            seen.add("mirrored")
    assert seen == {"plain", "mirrored"}


def test_depth_flips_with_its_image_and_crops_keep_their_size(tiny_data):
    plain = tdata.make_dataset("depth", tiny_data, "train")
    image, target = plain[1]
    flipping = tdata.make_dataset("depth", tiny_data, "train", hflip=True)
    torch.manual_seed(1)
    mirrored = 0
    for _ in range(16):
        im, t = flipping[1]
        flipped = not torch.equal(im, image)
        mirrored += flipped
        expected = target["depth"].flip(-1) if flipped else target["depth"]
        assert torch.equal(t["depth"], expected)
    assert 0 < mirrored < 16
    cropped = tdata.make_dataset("depth", tiny_data, "train", crop=(32, 48), hflip=True)
    im, t = cropped[0]
    assert im.shape[-2:] == t["depth"].shape[-2:] == (32, 48)


def test_without_augmentation_every_read_is_identical(tiny_data):
    ds = tdata.make_dataset("detection", tiny_data, "val")
    first, t0 = ds[0]
    for _ in range(4):
        again, t = ds[0]
        assert torch.equal(again, first) and torch.equal(t["boxes"], t0["boxes"])


def test_training_flips_by_default_and_the_cli_turns_them_off():
    import argparse

    from layercast.commands import train as cmd
    from layercast.train.loop import TrainConfig

    assert TrainConfig(kind="task", data=Path("d"), out=Path("o")).hflip is True
    parser = argparse.ArgumentParser()
    cmd.register(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(
        ["train", "task", "--task", "detection", "--data", "d", "--out", "o", "--no-hflip"]
    )
    assert args.hflip is False
    args = parser.parse_args(["train", "task", "--task", "detection", "--data", "d", "--out", "o"])
    assert args.hflip is None  # the config's default applies
