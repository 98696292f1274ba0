"""``padnet-dist eval-cityscapes``: the official tables printed, the same numbers as JSON (NaN as null)."""

from __future__ import annotations

import json

import pytest

from padnet_dist.cli import main
from padnet_dist.eval.cityscapes import evaluate_folder
from tests.helpers.cityscapes_gt import write_fixture

HEADLINE = ("iou_class", "iiou_class", "iou_category", "iiou_category")


def test_eval_cityscapes_command(tmp_path, capsys):
    gt_root, pred_dir = tmp_path / "cityscapes", tmp_path / "results"
    write_fixture(gt_root, pred_dir, frames_per_city=1, size=(32, 64), seed=4)
    out = tmp_path / "out" / "cityscapes.json"
    rc = main(["eval-cityscapes", "--pred", str(pred_dir), "--gt", str(gt_root), "--split", "val", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    for row in ("road", "car", "IoU class", "iIoU class", "IoU category", "iIoU category"):
        assert row in printed
    written = json.loads(out.read_text())
    expected = evaluate_folder(pred_dir, gt_root, "val")
    for key in HEADLINE:
        assert written[key] == pytest.approx(expected[key])
    assert set(written["class_iou"]) == set(expected["class_iou"])
    assert written["class_iiou"]["road"] is None  # NaN is written as null
    assert not [p.name for p in out.parent.iterdir() if p.name != out.name]  # atomic: no temporary file left

    rc = main(["eval-cityscapes", "--pred", str(tmp_path / "nowhere"), "--gt", str(gt_root)])
    err = capsys.readouterr().err
    assert rc == 2 and "nowhere" in err and len(err.strip().splitlines()) == 1
