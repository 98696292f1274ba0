"""``padnet-dist eval-cityscapes --pred DIR --gt CITYSCAPES_ROOT [--split val] [--json OUT]``.

The official Cityscapes pixel-level evaluation of a folder of label-id PNGs (e.g. from ``padnet-dist predict
--format cityscapes``): prints per-class IoU / iIoU, per-category scores and the four headline numbers, and writes
them as JSON (NaN as null) when --json is given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, help="folder of {city}_{seq}_{frame}*.png label-id predictions")
    parser.add_argument("--gt", required=True, help="Cityscapes root holding gtFine/{split}/{city}/...")
    parser.add_argument("--split", default="val", help="gtFine split to evaluate (default: val)")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")


def _fmt(value: float) -> str:
    return "  n/a" if math.isnan(value) else f"{value:.4f}"


def format_results(result: dict) -> str:
    """The official script's tables: classes, then categories, each with IoU and iIoU, then the headline numbers."""
    lines = [f"{'class':<14} {'IoU':>7} {'iIoU':>7}", "-" * 30]
    for name, iou in result["class_iou"].items():
        lines.append(f"{name:<14} {_fmt(iou):>7} {_fmt(result['class_iiou'][name]):>7}")
    lines += ["-" * 30, f"{'category':<14} {'IoU':>7} {'iIoU':>7}", "-" * 30]
    for name, iou in result["category_iou"].items():
        lines.append(f"{name:<14} {_fmt(iou):>7} {_fmt(result['category_iiou'][name]):>7}")
    lines += [
        "-" * 30,
        f"{'IoU class':<16} {_fmt(result['iou_class'])}",
        f"{'iIoU class':<16} {_fmt(result['iiou_class'])}",
        f"{'IoU category':<16} {_fmt(result['iou_category'])}",
        f"{'iIoU category':<16} {_fmt(result['iiou_category'])}",
        f"({result['num_images']} images of gtFine/{result['split']})",
    ]
    return "\n".join(lines)


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_json_atomic(path: str | os.PathLike, data: dict) -> None:
    """Write data as JSON (NaN -> null); the file appears whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_json_safe(data), f, indent=2, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    from padnet_dist.eval.cityscapes import evaluate_folder

    result = evaluate_folder(args.pred, args.gt, args.split)
    print(format_results(result))
    if args.json:
        write_json_atomic(args.json, result)
        print(f"wrote {args.json}")
    return 0
