"""Metrics JSON (strict: non-finite numbers as null; atomic) and the text tables."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from padnet_dist.eval.report import format_cityscapes_table, format_table, metrics_to_json, write_metrics_json


def test_metrics_json_is_strict_and_table_lists_headline_numbers():
    metrics = {
        "dataset": "cityscapes",
        "num_samples": 2,
        "depth": {"rel": 0.1, "rms": 2.0, "log10": 0.05, "delta1": 0.9, "delta2": 0.95, "delta3": 0.99, "note": "n"},
        "semantic": {"miou": 0.5, "mean_acc": 0.6, "pixel_acc": 0.7, "iou": {"road": 0.9, "wall": math.nan}},
        "cityscapes": {"iou_class": 0.4, "iiou_class": math.nan, "note": "official numbers need eval-cityscapes"},
    }
    parsed = json.loads(metrics_to_json(metrics))  # strict: NaN is not JSON
    assert parsed["semantic"]["iou"]["wall"] is None and parsed["cityscapes"]["iiou_class"] is None
    table = format_table(metrics)
    for label in ("rel", "log10", "rms (m)", "delta < 1.25^3", "mean IoU", "pixel accuracy", "IoU road", "iIoU class"):
        assert label in table
    assert "n/a" in table and "eval-cityscapes" in table


def test_every_non_finite_number_becomes_null_and_arrays_become_lists(tmp_path):
    metrics = {
        "a": math.inf,
        "b": -math.inf,
        "c": np.float64("nan"),
        "d": torch.tensor(0.25, dtype=torch.float64),
        "e": np.array([1.0, np.nan]),
        "f": (np.int64(3), torch.tensor([2, 5])),
    }
    url = str(tmp_path / "deep" / "metrics.json")
    write_metrics_json(url, metrics)

    def refuse(token: str):
        raise AssertionError(f"{token} is not JSON")

    parsed = json.loads(open(url).read(), parse_constant=refuse)
    assert parsed == {"a": None, "b": None, "c": None, "d": 0.25, "e": [1.0, None], "f": [3, [2, 5]]}
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["metrics.json"]  # no temporary file left


def test_cityscapes_table_prints_nan_as_not_available():
    result = {
        "class_iou": {"road": 0.5, "person": math.nan},
        "class_iiou": {"road": math.nan, "person": math.nan},
        "category_iou": {"flat": 0.5},
        "category_iiou": {"flat": math.nan},
        "iou_class": 0.5,
        "iiou_class": math.nan,
        "iou_category": 0.5,
        "iiou_category": math.nan,
        "num_images": 2,
        "split": "val",
    }
    table = format_cityscapes_table(result)
    assert "0.5000" in table and "n/a" in table and "(2 images of gtFine/val)" in table
