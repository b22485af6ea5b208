"""Training and evaluation data: the real COCO 2017 and Cityscapes loaders,
pointed at the synthetic benchmark (``layercast data synth``) or real data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from layercast.shared.errors import ConfigError

#: Which dataset feeds which task: detection ← COCO, depth and segmentation ← Cityscapes.
TASK_DATASET = {
    "detection": "coco",
    "depth": "cityscapes",
    "segmentation": "cityscapes",
    "reconstruction": "coco",
}


def make_dataset(
    task: str,
    root: str | Path,
    split: str,
    crop: tuple[int, int] | None = None,
    hflip: bool = False,
) -> Dataset:
    """The loader for ``task``; training adds random ``crop`` = (height, width) windows and random
    left-right flips (``hflip``, with or without crops)."""
    from layercast.shared.data.transforms import Compose, RandomCrop, RandomHorizontalFlip

    steps = ([RandomCrop(crop)] if crop else []) + ([RandomHorizontalFlip()] if hflip else [])
    transforms = Compose(steps) if steps else None
    root = Path(root)
    kind = TASK_DATASET[task]
    if kind == "coco":
        from layercast.shared.data.coco import CocoDetection

        folder = root / "coco" if (root / "coco").exists() else root
        if not (folder / "annotations").exists():
            raise ConfigError(
                f"{folder} is not a COCO 2017 folder (no annotations/); run `layercast data synth --out {root}`"
            )
        return CocoDetection(folder, split=split, transforms=transforms)
    from layercast.shared.data.cityscapes import Cityscapes

    folder = root / "cityscapes" if (root / "cityscapes").exists() else root
    if not (folder / "leftImg8bit").exists():
        raise ConfigError(
            f"{folder} is not a Cityscapes folder (no leftImg8bit/); run `layercast data synth --out {root}`"
        )
    return Cityscapes(folder, split=split, transforms=transforms)


def task_target(task: str, target: Any) -> Any:
    """The part of a dataset target a task's loss wants."""
    if task == "detection":
        return {"boxes": target["boxes"], "labels": target["labels"]}
    if task == "depth":
        return target["depth"]
    if task == "segmentation":
        return target["semantic"]
    return None


def collate(batch: list[tuple[torch.Tensor, Any]]) -> tuple[torch.Tensor, list[Any]]:
    images = torch.stack([b[0] for b in batch])
    return images, [b[1] for b in batch]


def stack_targets(task: str, targets: list[Any]) -> Any:
    items = [task_target(task, t) for t in targets]
    if task in ("depth", "segmentation"):
        return torch.stack(items)
    return items


def make_loader(
    dataset: Dataset, batch_size: int, *, shuffle: bool, workers: int, dist_info=None, seed: int = 0
) -> DataLoader:
    sampler = None
    if dist_info is not None and dist_info.enabled:
        sampler = DistributedSampler(
            dataset, dist_info.world_size, dist_info.rank, shuffle=shuffle, seed=seed
        )
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        drop_last=shuffle,
        generator=g,
        persistent_workers=workers > 0,
    )


def forever(loader: DataLoader):
    epoch = 0
    while True:
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1
