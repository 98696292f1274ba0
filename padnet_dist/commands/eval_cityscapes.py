"""``padnet-dist eval-cityscapes --pred DIR --gt CITYSCAPES_ROOT [--split val] [--json OUT]``.

The official Cityscapes pixel-level evaluation of a folder of label-id PNGs (e.g. from ``padnet-dist predict
--format cityscapes``): prints per-class IoU / iIoU, per-category scores and the four headline numbers, and writes
them as JSON (NaN as null) when --json is given.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, help="folder of {city}_{seq}_{frame}*.png label-id predictions")
    parser.add_argument("--gt", required=True, help="Cityscapes root holding gtFine/{split}/{city}/...")
    parser.add_argument("--split", default="val", help="gtFine split to evaluate (default: val)")
    parser.add_argument("--json", default=None, help="write the results to this JSON file (path or s3:// URL)")


def run(args: argparse.Namespace) -> int:
    from padnet_dist.eval.cityscapes import evaluate_folder
    from padnet_dist.eval.report import format_cityscapes_table, write_metrics_json

    result = evaluate_folder(args.pred, args.gt, args.split)
    print(format_cityscapes_table(result))
    if args.json:
        write_metrics_json(args.json, result)
        print(f"wrote {args.json}")
    return 0
