"""The official Cityscapes label table and lookups derived from it.

Facts from cityscapesScripts ``helpers/labels.py`` (v2.3.0): 34 labels with ids 0..33 plus
``license plate`` (id -1, not present in ground-truth images). 19 of them are trained (train ids 0..18);
every other id maps to 255 (ignore). Evaluation is on label ids, not train ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_TRAIN_ID = 255
NUM_TRAIN_CLASSES = 19
NUM_LABEL_IDS = 34  # ids 0..33 appear in gtFine *_labelIds.png


@dataclass(frozen=True)
class Label:
    name: str
    id: int
    train_id: int  # 255 = not trained, -1 = license plate
    category: str
    category_id: int
    has_instances: bool
    ignore_in_eval: bool
    color: tuple[int, int, int]


def _l(name, id_, train_id, category, category_id, has_instances, ignore_in_eval, color) -> Label:
    return Label(name, id_, train_id, category, category_id, has_instances, ignore_in_eval, color)


# fmt: off
LABELS: tuple[Label, ...] = (
    #   name                   id  train  category        cat  inst   ignore  color
    _l("unlabeled",             0, 255, "void",           0, False, True,  (0, 0, 0)),
    _l("ego vehicle",           1, 255, "void",           0, False, True,  (0, 0, 0)),
    _l("rectification border",  2, 255, "void",           0, False, True,  (0, 0, 0)),
    _l("out of roi",            3, 255, "void",           0, False, True,  (0, 0, 0)),
    _l("static",                4, 255, "void",           0, False, True,  (0, 0, 0)),
    _l("dynamic",               5, 255, "void",           0, False, True,  (111, 74, 0)),
    _l("ground",                6, 255, "void",           0, False, True,  (81, 0, 81)),
    _l("road",                  7,   0, "flat",           1, False, False, (128, 64, 128)),
    _l("sidewalk",              8,   1, "flat",           1, False, False, (244, 35, 232)),
    _l("parking",               9, 255, "flat",           1, False, True,  (250, 170, 160)),
    _l("rail track",           10, 255, "flat",           1, False, True,  (230, 150, 140)),
    _l("building",             11,   2, "construction",   2, False, False, (70, 70, 70)),
    _l("wall",                 12,   3, "construction",   2, False, False, (102, 102, 156)),
    _l("fence",                13,   4, "construction",   2, False, False, (190, 153, 153)),
    _l("guard rail",           14, 255, "construction",   2, False, True,  (180, 165, 180)),
    _l("bridge",               15, 255, "construction",   2, False, True,  (150, 100, 100)),
    _l("tunnel",               16, 255, "construction",   2, False, True,  (150, 120, 90)),
    _l("pole",                 17,   5, "object",         3, False, False, (153, 153, 153)),
    _l("polegroup",            18, 255, "object",         3, False, True,  (153, 153, 153)),
    _l("traffic light",        19,   6, "object",         3, False, False, (250, 170, 30)),
    _l("traffic sign",         20,   7, "object",         3, False, False, (220, 220, 0)),
    _l("vegetation",           21,   8, "nature",         4, False, False, (107, 142, 35)),
    _l("terrain",              22,   9, "nature",         4, False, False, (152, 251, 152)),
    _l("sky",                  23,  10, "sky",            5, False, False, (70, 130, 180)),
    _l("person",               24,  11, "human",          6, True,  False, (220, 20, 60)),
    _l("rider",                25,  12, "human",          6, True,  False, (255, 0, 0)),
    _l("car",                  26,  13, "vehicle",        7, True,  False, (0, 0, 142)),
    _l("truck",                27,  14, "vehicle",        7, True,  False, (0, 0, 70)),
    _l("bus",                  28,  15, "vehicle",        7, True,  False, (0, 60, 100)),
    _l("caravan",              29, 255, "vehicle",        7, True,  True,  (0, 0, 90)),
    _l("trailer",              30, 255, "vehicle",        7, True,  True,  (0, 0, 110)),
    _l("train",                31,  16, "vehicle",        7, True,  False, (0, 80, 100)),
    _l("motorcycle",           32,  17, "vehicle",        7, True,  False, (0, 0, 230)),
    _l("bicycle",              33,  18, "vehicle",        7, True,  False, (119, 11, 32)),
    _l("license plate",        -1,  -1, "vehicle",        7, False, True,  (0, 0, 142)),
)
# fmt: on

NAME_TO_LABEL: dict[str, Label] = {label.name: label for label in LABELS}
ID_TO_LABEL: dict[int, Label] = {label.id: label for label in LABELS}

# Categories in category-id order; 'void' (id 0) is ignored in evaluation.
CATEGORIES: tuple[str, ...] = ("void", "flat", "construction", "object", "nature", "sky", "human", "vehicle")
EVAL_CATEGORIES: tuple[str, ...] = CATEGORIES[1:]

TRAIN_LABELS: tuple[Label, ...] = tuple(
    sorted((lb for lb in LABELS if 0 <= lb.train_id < IGNORE_TRAIN_ID), key=lambda lb: lb.train_id)
)
TRAIN_CLASS_NAMES: list[str] = [lb.name for lb in TRAIN_LABELS]
TRAIN_PALETTE: list[tuple[int, int, int]] = [lb.color for lb in TRAIN_LABELS]

ID_TO_TRAIN_ID: np.ndarray = np.full(256, IGNORE_TRAIN_ID, dtype=np.uint8)
for _lb in TRAIN_LABELS:
    ID_TO_TRAIN_ID[_lb.id] = _lb.train_id
ID_TO_TRAIN_ID.flags.writeable = False

TRAIN_ID_TO_ID: np.ndarray = np.array([lb.id for lb in TRAIN_LABELS], dtype=np.uint8)
TRAIN_ID_TO_ID.flags.writeable = False

# Label ids evaluated by the official pixel-level script (the 19 trained classes), in id order.
EVAL_LABEL_IDS: tuple[int, ...] = tuple(lb.id for lb in LABELS if lb.id >= 0 and not lb.ignore_in_eval)
# Evaluated classes that carry instance ids in *_instanceIds.png (label_id * 1000 + k): iIoU is defined for these.
INSTANCE_EVAL_LABEL_IDS: tuple[int, ...] = tuple(lb.id for lb in LABELS if lb.has_instances and not lb.ignore_in_eval)


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Map a train-id image (any shape, values 0..18 or 255) to label ids; 255 becomes 0 ('unlabeled')."""
    lut = np.zeros(256, dtype=np.uint8)
    lut[: len(TRAIN_ID_TO_ID)] = TRAIN_ID_TO_ID
    return lut[np.asarray(train_ids, dtype=np.uint8)]


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a label-id image (values 0..255) to train ids (uint8, 255 = ignore)."""
    return ID_TO_TRAIN_ID[np.asarray(label_ids, dtype=np.uint8)]
