"""The official Cityscapes pixel-level evaluation (cityscapesScripts evalPixelLevelSemanticLabeling.py).

Same numbers as the official script (checked against it to 1e-6 in tests/eval/test_cityscapes_eval.py):
  - a confusion matrix over label ids 0..33 (rows ground truth);
  - IoU of a class = TP / (TP + FP + FN): FN = every ground-truth pixel of the class not predicted as it, FP =
    pixels predicted as the class whose ground truth is another *evaluated* class (void/ignored GT never counts);
    NaN when TP + FP + FN = 0, and NaN scores are left out of every average;
  - iIoU of an instance class: per ground-truth instance (instance id > 1000, class evaluated) TP and FN are
    weighted by avgClassSize[class] / instance_pixels, FP is the unweighted class FP;
  - category IoU over blocks of the matrix; category iIoU for human and vehicle, where (as in the official code)
    a vehicle instance counts as TP when predicted as any vehicle id, caravan (29) and trailer (30) included,
    and the category FP also counts predictions of 29 and 30.
The avgClassSize table is in full-resolution pixels, so iIoU is only official at 2048x1024.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from padnet_dist.data.cityscapes_labels import (
    EVAL_CATEGORIES,
    EVAL_LABEL_IDS,
    ID_TO_LABEL,
    INSTANCE_EVAL_LABEL_IDS,
    LABELS,
    NUM_LABEL_IDS,
)
from padnet_dist.errors import UserError
from padnet_dist.eval.metrics import Accumulator

# Mean instance size per class in full-resolution pixels (official table, evalPixelLevelSemanticLabeling.py).
AVG_CLASS_SIZE_PX: dict[str, float] = {
    "bicycle": 4672.3249222261,
    "caravan": 36771.8241758242,
    "motorcycle": 6298.7200839748,
    "rider": 3930.4788056518,
    "bus": 35732.1511111111,
    "train": 67583.7075812274,
    "car": 12794.0202738185,
    "person": 3462.4756337644,
    "truck": 27855.1264367816,
    "trailer": 16926.9763313609,
}

EVAL_CLASS_NAMES: tuple[str, ...] = tuple(ID_TO_LABEL[i].name for i in EVAL_LABEL_IDS)
INSTANCE_CLASS_NAMES: tuple[str, ...] = tuple(ID_TO_LABEL[i].name for i in INSTANCE_EVAL_LABEL_IDS)


def _category_instance_ids() -> dict[str, tuple[int, ...]]:
    """Categories whose labels (id >= 0) all have instances, with those ids: the official code's id sets."""
    result = {}
    for category in EVAL_CATEGORIES:
        ids = [lb for lb in LABELS if lb.category == category and lb.id >= 0]
        if ids and all(lb.has_instances for lb in ids):
            result[category] = tuple(lb.id for lb in ids)
    return result


INSTANCE_CATEGORY_IDS: dict[str, tuple[int, ...]] = _category_instance_ids()  # human: 24,25; vehicle: 26..33
INSTANCE_CATEGORIES: tuple[str, ...] = tuple(INSTANCE_CATEGORY_IDS)

_EVALUATED = np.array([not ID_TO_LABEL[i].ignore_in_eval for i in range(NUM_LABEL_IDS)])
_NUM_CONF = NUM_LABEL_IDS * NUM_LABEL_IDS
_NUM_INST = len(INSTANCE_EVAL_LABEL_IDS)
_NUM_CAT = len(INSTANCE_CATEGORIES)
# state: confusion (34*34) | class tp_w, fn_w (8 each) | category tp_w, fn_w (2 each) | num_images
_STATE_SIZE = _NUM_CONF + 2 * _NUM_INST + 2 * _NUM_CAT + 1


class CityscapesEvaluator(Accumulator):
    """Accumulates the official pixel-level evaluation image by image.

    `state()` is a flat float64 tensor of counts and weighted sums (pixel counts stay exact below 2**53), so the
    states of several evaluators (e.g. ranks) are summed and `load_state`d to get the evaluation of all images.
    """

    def __init__(self) -> None:
        self._state = torch.zeros(_STATE_SIZE, dtype=torch.float64)

    @property
    def num_images(self) -> int:
        return int(self._state[-1].item())

    def confusion(self) -> np.ndarray:
        """(34, 34) int64 confusion over label ids, rows ground truth."""
        return self._state[:_NUM_CONF].numpy().astype(np.int64).reshape(NUM_LABEL_IDS, NUM_LABEL_IDS)

    def update(self, pred_label_ids, gt_label_ids, gt_instance_ids) -> None:
        """One image: pred_label_ids (H, W) label ids 0..33 (not train ids); gt_label_ids (H, W) 0..33;
        gt_instance_ids (H, W) int, the *_gtFine_instanceIds.png content (label_id * 1000 + k for instances)."""
        pred = _as_int64(pred_label_ids)
        gt = _as_int64(gt_label_ids)
        inst = _as_int64(gt_instance_ids)
        if not (pred.shape == gt.shape == inst.shape) or pred.ndim != 2:
            raise ValueError(
                f"prediction {pred.shape}, label ids {gt.shape} and instance ids {inst.shape} must be the same (H, W)"
            )
        for name, ids in (("ground truth", gt), ("prediction", pred)):
            if ids.size and (ids.min() < 0 or ids.max() >= NUM_LABEL_IDS):
                raise ValueError(
                    f"{name} has values outside the label ids 0..{NUM_LABEL_IDS - 1} (max {ids.max()}): "
                    "Cityscapes evaluation takes label ids, not train ids with 255"
                )
        conf = np.bincount((gt * NUM_LABEL_IDS + pred).ravel(), minlength=_NUM_CONF).astype(np.float64)

        class_tp_w = np.zeros(_NUM_INST)
        class_fn_w = np.zeros(_NUM_INST)
        cat_tp_w = np.zeros(_NUM_CAT)
        cat_fn_w = np.zeros(_NUM_CAT)
        inst_pixels = inst > 1000  # the official test (an instance id of a class with id 1 would be 1000)
        if inst_pixels.any():
            ids, inverse, sizes = np.unique(inst[inst_pixels], return_inverse=True, return_counts=True)
            labels = ids // 1000
            unknown = labels[labels >= NUM_LABEL_IDS]
            if unknown.size:
                raise ValueError(f"instance id {unknown[0] * 1000} names label id {unknown[0]}, which does not exist")
            pixel_label = labels[inverse]
            pixel_pred = pred[inst_pixels]
            tp = np.bincount(inverse, weights=(pixel_pred == pixel_label), minlength=ids.size)
            for k, label_id in enumerate(INSTANCE_EVAL_LABEL_IDS):
                sel = labels == label_id
                if not sel.any():
                    continue
                weight = AVG_CLASS_SIZE_PX[ID_TO_LABEL[label_id].name] / sizes[sel]
                class_tp_w[k] = np.sum(tp[sel] * weight)
                class_fn_w[k] = np.sum((sizes[sel] - tp[sel]) * weight)
            for c, category in enumerate(INSTANCE_CATEGORIES):
                in_category = np.isin(pixel_pred, INSTANCE_CATEGORY_IDS[category])
                cat_tp = np.bincount(inverse, weights=in_category, minlength=ids.size)
                # Only instances of evaluated classes count (caravan/trailer GT instances are skipped).
                sel = np.isin(labels, INSTANCE_EVAL_LABEL_IDS) & np.isin(labels, INSTANCE_CATEGORY_IDS[category])
                if not sel.any():
                    continue
                weight = np.array([AVG_CLASS_SIZE_PX[ID_TO_LABEL[int(i)].name] for i in labels[sel]]) / sizes[sel]
                cat_tp_w[c] = np.sum(cat_tp[sel] * weight)
                cat_fn_w[c] = np.sum((sizes[sel] - cat_tp[sel]) * weight)
        update = np.concatenate([conf, class_tp_w, class_fn_w, cat_tp_w, cat_fn_w, [1.0]])
        self._state += torch.from_numpy(update)

    def compute(self) -> dict[str, object]:
        """The four headline numbers and per-class / per-category scores (NaN where undefined).

        Keys: iou_class, iiou_class, iou_category, iiou_category (means over the defined scores),
        class_iou, class_iiou (the 19 evaluated class names -> score; iIoU is NaN for classes without
        instances), category_iou, category_iiou (the 7 categories flat..vehicle; iIoU only for human, vehicle),
        num_images.
        """
        conf = self.confusion()
        s = self._state.numpy()
        offset = _NUM_CONF
        class_tp_w = s[offset : offset + _NUM_INST]
        class_fn_w = s[offset + _NUM_INST : offset + 2 * _NUM_INST]
        offset += 2 * _NUM_INST
        cat_tp_w = s[offset : offset + _NUM_CAT]
        cat_fn_w = s[offset + _NUM_CAT : offset + 2 * _NUM_CAT]

        evaluated_rows = np.flatnonzero(_EVALUATED)
        class_iou, class_iiou = {}, {}
        for label_id in EVAL_LABEL_IDS:
            name = ID_TO_LABEL[label_id].name
            tp = conf[label_id, label_id]
            fn = conf[label_id, :].sum() - tp
            fp = conf[evaluated_rows[evaluated_rows != label_id], label_id].sum()
            class_iou[name] = _ratio(tp, tp + fp + fn)
            if label_id in INSTANCE_EVAL_LABEL_IDS:
                k = INSTANCE_EVAL_LABEL_IDS.index(label_id)
                class_iiou[name] = _ratio(class_tp_w[k], class_tp_w[k] + fp + class_fn_w[k])
            else:
                class_iiou[name] = math.nan

        category_iou, category_iiou = {}, {}
        for category in EVAL_CATEGORIES:
            ids = [i for i in EVAL_LABEL_IDS if ID_TO_LABEL[i].category == category]
            outside = [i for i in EVAL_LABEL_IDS if ID_TO_LABEL[i].category != category]
            tp = conf[np.ix_(ids, ids)].sum()
            fn = conf[ids, :].sum() - tp
            fp = conf[np.ix_(outside, ids)].sum()
            category_iou[category] = _ratio(tp, tp + fp + fn)
            if category in INSTANCE_CATEGORY_IDS:
                c = INSTANCE_CATEGORIES.index(category)
                fp_inst = conf[np.ix_(outside, list(INSTANCE_CATEGORY_IDS[category]))].sum()
                category_iiou[category] = _ratio(cat_tp_w[c], cat_tp_w[c] + fp_inst + cat_fn_w[c])
            else:
                category_iiou[category] = math.nan

        return {
            "iou_class": _nanmean(class_iou.values()),
            "iiou_class": _nanmean(class_iiou.values()),
            "iou_category": _nanmean(category_iou.values()),
            "iiou_category": _nanmean(category_iiou.values()),
            "class_iou": class_iou,
            "class_iiou": class_iiou,
            "category_iou": category_iou,
            "category_iiou": category_iiou,
            "num_images": self.num_images,
        }


def _as_int64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(np.int64)  # widen first: uint16 instance ids must not wrap


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


def _nanmean(values) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else math.nan


def _read_png(path: Path, what: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.array(img)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {what} {path}: {e}") from None


def find_ground_truth(gt_root: str | os.PathLike, split: str) -> list[Path]:
    """The `gtFine/{split}/{city}/*_gtFine_labelIds.png` files under gt_root, sorted."""
    split_dir = Path(gt_root) / "gtFine" / split
    files = sorted(split_dir.glob("*/*_gtFine_labelIds.png"))
    if not files:
        raise UserError(
            f"no ground truth under {split_dir}: expected {{root}}/gtFine/{split}/{{city}}/*_gtFine_labelIds.png "
            "(pass the Cityscapes root with --gt)"
        )
    return files


def match_predictions(pred_dir: str | os.PathLike, gt_files: list[Path]) -> list[Path]:
    """For each ground-truth file the one prediction PNG named `{city}_{seq}_{frame}*.png` anywhere below pred_dir."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise UserError(f"prediction folder {pred_dir} does not exist")
    pngs = sorted(Path(root) / f for root, _, files in os.walk(pred_dir) for f in files if f.endswith(".png"))
    matched = []
    for gt in gt_files:
        prefix = "_".join(gt.name.split("_")[:3])
        found = [p for p in pngs if p.name.startswith(prefix)]
        if not found:
            raise UserError(f"no prediction for {gt.name} in {pred_dir}: expected a PNG named {prefix}*.png")
        if len(found) > 1:
            raise UserError(f"several predictions for {gt.name}: {', '.join(str(p) for p in found[:3])}; keep one")
        matched.append(found[0])
    return matched


def evaluate_folder(pred_dir: str | os.PathLike, gt_root: str | os.PathLike, split: str = "val") -> dict[str, object]:
    """Official pixel-level evaluation of a folder of label-id PNG predictions against gtFine/{split}.

    Predictions: single-channel PNGs of label ids, one per ground-truth frame, named `{city}_{seq}_{frame}*.png`,
    the ground truth's size. Returns `CityscapesEvaluator.compute()` plus `split`.
    """
    gt_files = find_ground_truth(gt_root, split)
    pred_files = match_predictions(pred_dir, gt_files)
    evaluator = CityscapesEvaluator()
    for gt_file, pred_file in zip(gt_files, pred_files):
        pred = _read_png(pred_file, "prediction")
        gt = _read_png(gt_file, "ground truth")
        inst_file = gt_file.with_name(gt_file.name.replace("_gtFine_labelIds.png", "_gtFine_instanceIds.png"))
        if not inst_file.exists():
            raise UserError(f"missing instance ground truth {inst_file}: gtFine must hold *_gtFine_instanceIds.png")
        inst = _read_png(inst_file, "instance ground truth")
        if pred.ndim != 2:
            raise UserError(
                f"prediction {pred_file} has {pred.shape[2]} channels: write single-channel (mode L) PNGs of label ids"
            )
        if pred.shape != gt.shape:
            raise UserError(
                f"prediction {pred_file} is {pred.shape[1]}x{pred.shape[0]} but its ground truth is "
                f"{gt.shape[1]}x{gt.shape[0]}: predict at the ground truth's resolution"
            )
        if gt.ndim != 2 or inst.shape != gt.shape:
            raise UserError(f"ground truth {gt_file} and {inst_file.name} must be single-channel images of one size")
        try:
            evaluator.update(pred, gt, inst)
        except ValueError as e:
            raise UserError(f"{pred_file.name}: {e}") from None
    return evaluator.compute() | {"split": split}
