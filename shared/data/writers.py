"""Write synthetic splits in the real COCO 2017 and Cityscapes layouts.

``generate(out, n_train, n_val)`` renders scenes and writes, under ``out``::

    coco/train2017/000000000001.png ...            images (PNG by default, see below)
    coco/val2017/000001000001.png ...
    coco/annotations/instances_{train,val}2017.json   COCO fields: images, annotations (bbox xywh,
                                                    area, iscrowd, category_id, id, RLE segmentation),
                                                    categories (id, name, supercategory)
    cityscapes/leftImg8bit/{train,val}/<city>/<city>_<seq>_000019_leftImg8bit.png
    cityscapes/disparity/{train,val}/<city>/<city>_<seq>_000019_disparity.png     uint16, p = d*256+1, 0 invalid
    cityscapes/gtFine/{train,val}/<city>/<city>_<seq>_000019_gtFine_labelIds.png  uint8 labelIds
    cityscapes/gtFine/{train,val}/<city>/<city>_<seq>_000019_gtFine_instanceIds.png  uint16, labelId*1000+k
    cityscapes/camera/{train,val}/<city>/<city>_<seq>_000019_camera.json           baseline, fx, fy, u0, v0
    synth_info.json                                 generator version, seed, sizes and counts

The ``val`` split is the held-out *test* split of the benchmark. Scene ``i`` of a split is rendered
from the seed ``[seed, split code, i]``, so a split is the same whatever the number of workers.

Images are PNG by default rather than COCO's JPEG: the benchmark measures codecs against the
pixels the scene renderer produced, and a JPEG source would bake JPEG's block artefacts into the
ground truth (favouring the JPEG baseline, and teaching the learned codec to reproduce them).
``image_format="jpg"`` writes quality-95 JPEGs for those who want COCO's exact convention; the
Cityscapes images are PNG either way, as in Cityscapes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from layercast.shared.data.camera import encode_disparity_png
from layercast.shared.data.labels import CITYSCAPES_LABELS, coco_categories
from layercast.shared.data.synth import Scene, render_scene

#: Bumped whenever the renderer changes what a seed produces.
GENERATOR_VERSION = "synth-streets-1"
SPLIT_CODES = {"train": 1, "val": 2}
#: Cities take contiguous blocks of a split, in alphabetical order so that sorted paths follow the index.
CITIES = {"train": ("synthburg", "synthtown", "synthville"), "val": ("synthcity",)}
#: zlib level of the RGB PNGs: 3x faster than the default 6 for 5 % more bytes on these images.
PNG_LEVEL = 3
#: Cityscapes names its annotated frame of each 30-frame snippet 000019.
FRAME = 19
_HAS_INSTANCES = np.zeros(256, dtype=bool)
for _lab in CITYSCAPES_LABELS:
    if _lab.has_instances and _lab.id >= 0:
        _HAS_INSTANCES[_lab.id] = True

ImageFormat = Literal["png", "jpg"]


def scene_seed(seed: int, split: str, index: int) -> list[int]:
    """The seed of scene ``index`` of ``split``."""
    return [int(seed), SPLIT_CODES[split], int(index)]


def image_id(split: str, index: int) -> int:
    """COCO image id: 1.. for train, 1_000_001.. for val (unique across splits, as in COCO)."""
    return (0 if split == "train" else 1_000_000) + index + 1


def cityscapes_stem(split: str, index: int, count: int) -> tuple[str, str]:
    """``(city, stem)`` of image ``index``: cities take contiguous blocks, ``seq`` is the index."""
    cities = CITIES[split]
    city = cities[min(index * len(cities) // max(count, 1), len(cities) - 1)]
    return city, f"{city}_{index:06d}_{FRAME:06d}"


def instance_ids_map(scene: Scene) -> np.ndarray:
    """Cityscapes ``instanceIds``: ``labelId * 1000 + k`` on instances of classes with instances, else labelId."""
    out = scene.label_ids.astype(np.uint16)
    inst = scene.instances
    on = (inst > 0) & _HAS_INSTANCES[scene.label_ids]
    out[on] = scene.label_ids[on].astype(np.uint16) * 1000 + (inst[on] - 1).astype(np.uint16)
    return out


def coco_annotations(scene: Scene) -> list[dict[str, Any]]:
    """COCO annotation dicts (without ``id`` / ``image_id``) for the boxes of ``scene``."""
    from pycocotools import mask as mask_utils

    anns = []
    for i, ((x0, y0, x1, y1), cat) in enumerate(
        zip(scene.boxes.tolist(), scene.labels.tolist(), strict=True)
    ):
        m = np.asfortranarray((scene.instances == i + 1).astype(np.uint8))
        rle = mask_utils.encode(m)
        anns.append(
            {
                "category_id": int(cat),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": float(mask_utils.area(rle)),
                "iscrowd": 0,
                "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
            }
        )
    return anns


@dataclass(frozen=True)
class _Job:
    out: str
    split: str
    index: int
    count: int
    seed: int
    width: int
    height: int
    image_format: str


def _write_one(job: _Job) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    scene = render_scene(scene_seed(job.seed, job.split, job.index), job.width, job.height)
    return write_scene(Path(job.out), job.split, job.index, job.count, scene, job.image_format)


def write_scene(
    out: Path, split: str, index: int, count: int, scene: Scene, image_format: str = "png"
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Write ``scene`` as image ``index`` of ``count`` of ``split`` in both layouts (the folders of
    :func:`prepare_dirs`); returns its COCO image record and annotations (without ids)."""
    iid = image_id(split, index)
    name = f"{iid:012d}.{image_format}"
    coco_img = out / "coco" / f"{split}2017" / name
    city, stem = cityscapes_stem(split, index, count)
    cs = out / "cityscapes"
    left = cs / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
    img = Image.fromarray(scene.image)
    img.save(left, compress_level=PNG_LEVEL)
    if image_format == "png":
        if coco_img.exists():
            coco_img.unlink()
        try:
            os.link(left, coco_img)  # identical bytes: share them
        except OSError:
            shutil.copyfile(left, coco_img)
    else:
        img.save(coco_img, quality=95, subsampling=0)
    Image.fromarray(encode_disparity_png(scene.disparity)).save(
        cs / "disparity" / split / city / f"{stem}_disparity.png"
    )
    gt = cs / "gtFine" / split / city
    Image.fromarray(scene.label_ids).save(gt / f"{stem}_gtFine_labelIds.png")
    Image.fromarray(instance_ids_map(scene)).save(gt / f"{stem}_gtFine_instanceIds.png")
    (cs / "camera" / split / city / f"{stem}_camera.json").write_text(
        json.dumps(scene.camera.to_cityscapes_json(), indent=2)
    )
    record = {
        "id": iid,
        "file_name": name,
        "width": scene.width,
        "height": scene.height,
        "license": 1,
        "date_captured": "",
        "cityscapes": f"{city}/{stem}",
    }
    return record, coco_annotations(scene)


def write_coco_split(
    out: Path,
    split: str,
    description: str,
    seed: int,
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
) -> None:
    """``coco/annotations/instances_<split>2017.json`` of the images and annotations written."""
    dataset = {
        "info": {
            "description": description,
            "version": GENERATOR_VERSION,
            "year": 2024,
            "contributor": "layercast",
            "date_created": "",
            "seed": seed,
        },
        "licenses": [{"id": 1, "name": "CC0 1.0 (procedurally generated)", "url": ""}],
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(),
    }
    (out / "coco" / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(dataset))


@dataclass
class SplitSummary:
    """What :func:`generate` wrote for one split."""

    split: str
    images: int
    annotations: int
    per_category: dict[str, int] = field(default_factory=dict)


@dataclass
class GenerateSummary:
    """Where :func:`generate` wrote the data and what is in it."""

    root: str
    coco: str
    cityscapes: str
    splits: list[SplitSummary]
    seconds: float


def prepare_dirs(out: Path, split: str) -> None:
    """The COCO and Cityscapes folders of ``split`` under ``out``."""
    (out / "coco" / f"{split}2017").mkdir(parents=True, exist_ok=True)
    (out / "coco" / "annotations").mkdir(parents=True, exist_ok=True)
    for city in CITIES[split]:
        for kind in ("leftImg8bit", "disparity", "gtFine", "camera"):
            (out / "cityscapes" / kind / split / city).mkdir(parents=True, exist_ok=True)


def _results(jobs: list[_Job], workers: int) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    if workers <= 1:
        yield from map(_write_one, jobs)
        return
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_write_one, jobs, chunksize=8)


def generate(
    out: str | Path,
    n_train: int = 1000,
    n_val: int = 200,
    width: int = 256,
    height: int = 192,
    seed: int = 0,
    workers: int = 1,
    image_format: ImageFormat = "png",
    progress: bool = True,
) -> GenerateSummary:
    """Render and write a train and a val (test) split in COCO and Cityscapes layouts under ``out``."""
    import time

    from tqdm import tqdm

    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', not {image_format!r}")
    t0 = time.perf_counter()
    out = Path(out)
    names = {c["id"]: c["name"] for c in coco_categories()}
    summaries = []
    for split, count in (("train", n_train), ("val", n_val)):
        prepare_dirs(out, split)
        jobs = [_Job(str(out), split, i, count, seed, width, height, image_format) for i in range(count)]
        images, annotations = [], []
        bar = tqdm(
            _results(jobs, workers), total=count, desc=f"synth {split}", unit="img", disable=not progress
        )
        for record, anns in bar:
            images.append(record)
            for ann in anns:
                ann.update(id=len(annotations) + 1, image_id=record["id"])
                annotations.append(ann)
        write_coco_split(
            out,
            split,
            f"layercast synthetic streets ({GENERATOR_VERSION}), {split} split",
            seed,
            images,
            annotations,
        )
        per_cat: dict[str, int] = {}
        for ann in annotations:
            per_cat[names[ann["category_id"]]] = per_cat.get(names[ann["category_id"]], 0) + 1
        summaries.append(SplitSummary(split, len(images), len(annotations), per_cat))
    summary = GenerateSummary(
        root=str(out),
        coco=str(out / "coco"),
        cityscapes=str(out / "cityscapes"),
        splits=summaries,
        seconds=time.perf_counter() - t0,
    )
    info = {
        "generator": GENERATOR_VERSION,
        "seed": seed,
        "width": width,
        "height": height,
        "image_format": image_format,
        "splits": {
            s.split: {"images": s.images, "annotations": s.annotations, "per_category": s.per_category}
            for s in summaries
        },
        "note": "the val split is the benchmark's held-out test split",
    }
    (out / "synth_info.json").write_text(json.dumps(info, indent=2))
    return summary


def summary_dict(summary: GenerateSummary) -> dict[str, Any]:
    """A JSON-ready form of a :class:`GenerateSummary`."""
    return asdict(summary)
