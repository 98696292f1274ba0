"""Lookups over the official Cityscapes label table, ``cityscapesscripts.helpers.labels`` (the cityscapesScripts
package, a runtime dependency: the converter, the evaluator and prediction export use these tables).

The official table: 34 labels with ids 0..33 plus ``license plate`` (id -1, not present in ground-truth images).
19 of them are trained (train ids 0..18); every other id maps to 255 (ignore). Evaluation is on label ids, not train
ids. Importing ``cityscapesscripts.helpers.labels`` costs about 2 ms and pulls in only ``collections`` (no numpy,
matplotlib or PIL). ``Label`` re-spells the library's camelCase fields in this package's snake_case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cityscapesscripts.helpers import labels as official

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


LABELS: tuple[Label, ...] = tuple(
    Label(
        name=lb.name,
        id=lb.id,
        train_id=lb.trainId,
        category=lb.category,
        category_id=lb.categoryId,
        has_instances=lb.hasInstances,
        ignore_in_eval=lb.ignoreInEval,
        color=tuple(lb.color),
    )
    for lb in official.labels
)

NAME_TO_LABEL: dict[str, Label] = {label.name: label for label in LABELS}
ID_TO_LABEL: dict[int, Label] = {label.id: label for label in LABELS}

# Categories in category-id order; 'void' (id 0) is ignored in evaluation.
CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(lb.category for lb in sorted(LABELS, key=lambda lb: lb.category_id)))
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
