"""Label tables: the official Cityscapes labels and the COCO categories the synthetic benchmark uses.

The Cityscapes table is the one of ``cityscapesscripts/helpers/labels.py`` (name, labelId, trainId,
category, hasInstances, colour). ``LABEL_TO_TRAIN`` maps labelIds to the standard 19 train ids with
255 as ignore, exactly as that table does (``trainId`` 255 or -1 become 255).

The synthetic object classes carry their real COCO 2017 category id, name and supercategory and the
Cityscapes labelId of the same thing, so the generated folders are read by unmodified COCO and
Cityscapes tooling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Train id used for pixels that are not evaluated.
IGNORE_INDEX = 255


@dataclass(frozen=True)
class CityscapesLabel:
    """One row of the official Cityscapes label table."""

    name: str
    id: int
    train_id: int
    category: str
    has_instances: bool
    color: tuple[int, int, int]


# fmt: off
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = (
    CityscapesLabel("unlabeled",            0, 255, "void",         False, (0, 0, 0)),
    CityscapesLabel("ego vehicle",          1, 255, "void",         False, (0, 0, 0)),
    CityscapesLabel("rectification border", 2, 255, "void",         False, (0, 0, 0)),
    CityscapesLabel("out of roi",           3, 255, "void",         False, (0, 0, 0)),
    CityscapesLabel("static",               4, 255, "void",         False, (0, 0, 0)),
    CityscapesLabel("dynamic",              5, 255, "void",         False, (111, 74, 0)),
    CityscapesLabel("ground",               6, 255, "void",         False, (81, 0, 81)),
    CityscapesLabel("road",                 7, 0,   "flat",         False, (128, 64, 128)),
    CityscapesLabel("sidewalk",             8, 1,   "flat",         False, (244, 35, 232)),
    CityscapesLabel("parking",              9, 255, "flat",         False, (250, 170, 160)),
    CityscapesLabel("rail track",          10, 255, "flat",         False, (230, 150, 140)),
    CityscapesLabel("building",            11, 2,   "construction", False, (70, 70, 70)),
    CityscapesLabel("wall",                12, 3,   "construction", False, (102, 102, 156)),
    CityscapesLabel("fence",               13, 4,   "construction", False, (190, 153, 153)),
    CityscapesLabel("guard rail",          14, 255, "construction", False, (180, 165, 180)),
    CityscapesLabel("bridge",              15, 255, "construction", False, (150, 100, 100)),
    CityscapesLabel("tunnel",              16, 255, "construction", False, (150, 120, 90)),
    CityscapesLabel("pole",                17, 5,   "object",       False, (153, 153, 153)),
    CityscapesLabel("polegroup",           18, 255, "object",       False, (153, 153, 153)),
    CityscapesLabel("traffic light",       19, 6,   "object",       False, (250, 170, 30)),
    CityscapesLabel("traffic sign",        20, 7,   "object",       False, (220, 220, 0)),
    CityscapesLabel("vegetation",          21, 8,   "nature",       False, (107, 142, 35)),
    CityscapesLabel("terrain",             22, 9,   "nature",       False, (152, 251, 152)),
    CityscapesLabel("sky",                 23, 10,  "sky",          False, (70, 130, 180)),
    CityscapesLabel("person",              24, 11,  "human",        True,  (220, 20, 60)),
    CityscapesLabel("rider",               25, 12,  "human",        True,  (255, 0, 0)),
    CityscapesLabel("car",                 26, 13,  "vehicle",      True,  (0, 0, 142)),
    CityscapesLabel("truck",               27, 14,  "vehicle",      True,  (0, 0, 70)),
    CityscapesLabel("bus",                 28, 15,  "vehicle",      True,  (0, 60, 100)),
    CityscapesLabel("caravan",             29, 255, "vehicle",      True,  (0, 0, 90)),
    CityscapesLabel("trailer",             30, 255, "vehicle",      True,  (0, 0, 110)),
    CityscapesLabel("train",               31, 16,  "vehicle",      True,  (0, 80, 100)),
    CityscapesLabel("motorcycle",          32, 17,  "vehicle",      True,  (0, 0, 230)),
    CityscapesLabel("bicycle",             33, 18,  "vehicle",      True,  (119, 11, 32)),
    CityscapesLabel("license plate",       -1, 255, "vehicle",      False, (0, 0, 142)),
)
# fmt: on

#: labelId by name, e.g. ``CS["road"] == 7``.
CS: dict[str, int] = {lab.name: lab.id for lab in CITYSCAPES_LABELS if lab.id >= 0}

#: Number of Cityscapes train classes (train ids 0..18).
NUM_TRAIN_CLASSES = 19

#: Names of the 19 train ids in order.
TRAIN_CLASS_NAMES: tuple[str, ...] = tuple(
    lab.name for lab in sorted(CITYSCAPES_LABELS, key=lambda lab: lab.train_id) if lab.train_id < 255
)


def _label_to_train_lut() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for lab in CITYSCAPES_LABELS:
        if 0 <= lab.id < 256 and 0 <= lab.train_id < 255:
            lut[lab.id] = lab.train_id
    return lut


#: Look-up table labelId (0..255) -> train id (0..18, 255 = ignore).
LABEL_TO_TRAIN: np.ndarray = _label_to_train_lut()

#: Look-up table labelId -> RGB colour of the official palette (for previews).
LABEL_COLORS: np.ndarray = np.zeros((256, 3), dtype=np.uint8)
for _lab in CITYSCAPES_LABELS:
    if _lab.id >= 0:
        LABEL_COLORS[_lab.id] = _lab.color


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a Cityscapes labelIds map (any integer dtype) to train ids (uint8, 255 = ignore)."""
    return LABEL_TO_TRAIN[np.asarray(label_ids).astype(np.int64) & 0xFF]


@dataclass(frozen=True)
class ObjectClass:
    """A class of object the synthetic renderer draws and annotates."""

    coco_id: int
    name: str
    supercategory: str
    cityscapes_id: int


#: The annotated object classes, with their real COCO 2017 ids and Cityscapes labelIds.
OBJECT_CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass(1, "person", "person", CS["person"]),
    ObjectClass(2, "bicycle", "vehicle", CS["bicycle"]),
    ObjectClass(3, "car", "vehicle", CS["car"]),
    ObjectClass(4, "motorcycle", "vehicle", CS["motorcycle"]),
    ObjectClass(6, "bus", "vehicle", CS["bus"]),
    ObjectClass(8, "truck", "vehicle", CS["truck"]),
    ObjectClass(10, "traffic light", "outdoor", CS["traffic light"]),
    ObjectClass(13, "stop sign", "outdoor", CS["traffic sign"]),
)

#: COCO category id by class name, e.g. ``COCO["car"] == 3``.
COCO: dict[str, int] = {c.name: c.coco_id for c in OBJECT_CLASSES}

#: COCO category id -> object class.
CLASS_BY_COCO_ID: dict[int, ObjectClass] = {c.coco_id: c for c in OBJECT_CLASSES}


def coco_categories() -> list[dict[str, object]]:
    """The ``categories`` list of an ``instances_*.json`` file for the synthetic classes."""
    return [{"supercategory": c.supercategory, "id": c.coco_id, "name": c.name} for c in OBJECT_CLASSES]
