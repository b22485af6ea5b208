"""Paired transforms and collate functions."""

from __future__ import annotations

import torch

from layercast.shared.data.transforms import (
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
    dense_collate,
    detection_collate,
)


def sample():
    image = torch.rand(3, 20, 30)
    target = {
        "boxes": torch.tensor([[2.0, 3.0, 12.0, 9.0], [25.0, 15.0, 30.0, 20.0]]),
        "labels": torch.tensor([1, 2]),
        "disparity": torch.arange(600, dtype=torch.float32).reshape(20, 30) / 10,
        "semantic": torch.arange(600).reshape(20, 30) % 19,
        "valid": torch.ones(20, 30, dtype=torch.bool),
    }
    return image, target


def test_flip_moves_boxes_and_maps_together():
    image, target = sample()
    out_img, out = RandomHorizontalFlip(p=1.0)(image, target)
    assert torch.equal(out_img, image.flip(-1))
    assert out["boxes"].tolist() == [[18.0, 3.0, 28.0, 9.0], [0.0, 15.0, 5.0, 20.0]]
    assert torch.equal(out["semantic"], target["semantic"].flip(-1))
    same_img, same = RandomHorizontalFlip(p=0.0)(image, target)
    assert torch.equal(same_img, image) and torch.equal(same["boxes"], target["boxes"])


def test_crop_shifts_clips_and_drops_boxes():
    torch.manual_seed(0)
    image, target = sample()
    for _ in range(20):
        out_img, out = RandomCrop((10, 16), min_box_keep=0.3)(image, target)
        assert out_img.shape == (3, 10, 16) and out["semantic"].shape == (10, 16)
        b = out["boxes"]
        assert len(b) == len(out["labels"])
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= 16).all() and (b[:, 3] <= 10).all()
        # the crop's pixels are the original's at the crop offset
        y0 = int((target["disparity"] == out["disparity"][0, 0]).nonzero()[0, 0])
        x0 = int((target["disparity"] == out["disparity"][0, 0]).nonzero()[0, 1])
        assert torch.equal(out_img, image[:, y0 : y0 + 10, x0 : x0 + 16])


def test_crop_pads_small_images_with_ignore_values():
    image, target = sample()
    out_img, out = RandomCrop((24, 30))(image, target)
    assert out_img.shape == (3, 24, 30)
    assert (
        (out["semantic"][20:] == 255).all()
        and (~out["valid"][20:]).all()
        and (out["disparity"][20:] == 0).all()
    )


def test_resize_scales_boxes_and_disparity():
    image, target = sample()
    out_img, out = Resize((10, 15))(image, target)
    assert out_img.shape == (3, 10, 15)
    assert out["boxes"][0].tolist() == [1.0, 1.5, 6.0, 4.5]
    # nearest sampling then disparity (pixels) halves with the width
    assert torch.allclose(out["disparity"], target["disparity"][::2, ::2] * 0.5)
    assert out["semantic"].dtype == torch.int64 and torch.equal(out["semantic"], target["semantic"][::2, ::2])


def test_collates():
    a, b = sample(), sample()
    images, targets = detection_collate([a, b])
    assert len(images) == 2 and targets[1]["labels"].tolist() == [1, 2]
    batch, dense = dense_collate([a, b])
    assert batch.shape == (2, 3, 20, 30) and dense["semantic"].shape == (2, 20, 30)
    assert isinstance(dense["boxes"], list)
    img, t = Compose([RandomHorizontalFlip(1.0), RandomHorizontalFlip(1.0)])(*sample())
    assert torch.equal(t["boxes"], sample()[1]["boxes"])
