"""``padnet-dist shard <dataset> ... --split NAME --out URL``: convert a dataset into WebDataset shards.

    padnet-dist shard cityscapes --root DIR --split train|val --out URL
    padnet-dist shard nyud --mat FILE --splits FILE --class-map FILE --split train|test --out URL
    padnet-dist shard synthetic --num N [--height H --width W --seed S] --split NAME --out URL

``--out`` is a local directory or ``s3://bucket/prefix``; it receives ``{split}-000000.tar ...`` and, last,
``{split}.manifest.json``. Re-running the same command skips the shards already complete. The S3 endpoint comes
from ``--endpoint-url`` or the standard AWS environment (``AWS_ENDPOINT_URL``, profile, credentials).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

from padnet_dist.data.converters import CONVERTERS, get_converter
from padnet_dist.errors import UserError

RGB_FORMATS = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg"}


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--out", required=True, help="output directory: a local path or s3://bucket/prefix")
    group.add_argument("--workers", type=int, default=1, help="processes building shards in parallel (default 1)")
    group.add_argument("--samples-per-shard", type=int, default=None, help="samples per shard (default: by size)")
    group.add_argument(
        "--target-shard-mb", type=float, default=1000.0, help="shard size aimed at when --samples-per-shard is unset"
    )
    group.add_argument(
        "--rgb-format",
        choices=sorted(RGB_FORMATS),
        default="jpg",
        help="jpg (default: JPEG q95 4:4:4, 4x smaller and 2.4x faster to decode than PNG, shards/README.md) or png "
        "(lossless)",
    )
    group.add_argument("--endpoint-url", default="", help="S3-compatible endpoint (default: the AWS environment)")
    group.add_argument("--region", default="", help="S3 region (default: the AWS environment)")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def _cityscapes_flags(parser: argparse.ArgumentParser) -> None:
    from padnet_dist.data.converters.cityscapes import SPLITS

    parser.add_argument(
        "--root", required=True, help="Cityscapes directory holding leftImg8bit/, gtFine/, disparity/, camera/"
    )
    parser.add_argument("--split", required=True, choices=SPLITS, help="which split to convert")


def _nyud_flags(parser: argparse.ArgumentParser) -> None:
    from padnet_dist.data.converters.nyud import SPLITS

    parser.add_argument("--mat", required=True, help="nyu_depth_v2_labeled.mat (MATLAB v7.3)")
    parser.add_argument("--splits", required=True, help="splits.mat of the NYU Depth V2 toolbox")
    parser.add_argument("--class-map", required=True, help="classMapping40.mat (mapClass: NYU label -> 40 classes)")
    parser.add_argument("--split", required=True, choices=SPLITS, help="train (795 images) or test (654)")
    parser.add_argument(
        "--raw-depth", action="store_true", help="use the raw Kinect depth (holes = invalid) instead of the in-painted"
    )


def _synthetic_flags(parser: argparse.ArgumentParser) -> None:
    from padnet_dist.data.converters.synthetic import SCENE_KINDS

    parser.add_argument("--num", type=int, required=True, help="number of scenes")
    parser.add_argument("--height", type=int, default=256, help="image height in pixels (default 256)")
    parser.add_argument("--width", type=int, default=512, help="image width in pixels (default 512)")
    parser.add_argument("--seed", type=int, default=None, help="scene family (default: derived from --split)")
    parser.add_argument("--scene", choices=SCENE_KINDS, default="mixed", help="scene kind")
    parser.add_argument("--split", required=True, help="split name, e.g. train or val")


# Each dataset's flags; their destinations are the field names of the converter's OPTIONS dataclass.
DATASET_FLAGS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "cityscapes": _cityscapes_flags,
    "nyud": _nyud_flags,
    "synthetic": _synthetic_flags,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for name in CONVERTERS:
        dataset_parser = sub.add_parser(name, help=get_converter(name).SUMMARY)
        DATASET_FLAGS[name](dataset_parser)
        _add_common_arguments(dataset_parser)


def converter_options(args: argparse.Namespace):  # noqa: ANN201 - the converter's OPTIONS dataclass
    """The typed inputs of ``args.dataset``'s converter, taken from the flags of the same names."""
    options_cls = get_converter(args.dataset).OPTIONS
    return options_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(options_cls)})


def _storage_config(args: argparse.Namespace):  # noqa: ANN202 - StorageConfig
    from padnet_dist.config import StorageConfig

    try:
        return StorageConfig(endpoint_url=args.endpoint_url, region=args.region)
    except ValueError as e:
        raise UserError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    from padnet_dist.data.converters import convert_dataset
    from padnet_dist.data.manifest import manifest_url_for

    if args.workers < 1:
        raise UserError(f"--workers {args.workers}: use 1 or more processes")
    if args.samples_per_shard is not None and args.samples_per_shard < 1:
        raise UserError(f"--samples-per-shard {args.samples_per_shard}: use 1 or more")
    if args.target_shard_mb <= 0:
        raise UserError(f"--target-shard-mb {args.target_shard_mb}: use a positive size")
    manifest = convert_dataset(
        args.dataset,
        converter_options(args),
        out_url=args.out,
        storage_cfg=_storage_config(args),
        samples_per_shard=args.samples_per_shard,
        target_shard_bytes=int(args.target_shard_mb * 1_000_000),
        num_workers=args.workers,
        rgb_format=RGB_FORMATS[args.rgb_format],
        progress=not args.no_progress,
    )
    print(
        f"{manifest.num_samples} {manifest.dataset}/{manifest.split} samples in {len(manifest.shards)} shards: "
        f"{manifest_url_for(args.out, args.split)}"
    )
    return 0
