"""``padnet-dist predict``: depth and semantic predictions of a checkpoint, written as images.

Input is a folder (local or s3://, searched recursively) of .png/.jpg/.jpeg images, or a shard manifest
(``*.manifest.json``). ``--format panels`` (default) writes per image ``{name}_semantic.png``, ``{name}_{kind}.png``,
``{name}_{kind}16.png`` and ``{name}_panel.png``, ``{name}`` being the file's stem or the sample key, and once
``predictions.json`` naming the depth target, its unit and the 16-bit encoding. ``{kind}`` is the checkpoint's
``data.depth_target`` (``depth``: metres x 256; ``disparity``: pixels, Cityscapes' encoding x 256 + 1;
``inverse_depth``: 1/m x 16384; 0 = invalid), or ``depth`` with ``--depth-metres``, which converts a disparity or
inverse-depth model's output to metres (disparity needs each image's camera: predict from a shard manifest).
``--format cityscapes`` writes the benchmark's ``{city}_{seq}_{frame}_pred.png`` label-id images.
Predictions are made at the input's resolution (for a manifest: the resolution stored in the shards).
"""

from __future__ import annotations

import argparse

from padnet_dist.config.cli_args import add_config_arguments, config_from_args
from padnet_dist.eval.predict_checkpoint import FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--checkpoint", required=True, metavar="URL", help="a step-... checkpoint, or a phase/run dir")
    parser.add_argument(
        "--input", required=True, metavar="DIR|MANIFEST_URL", help="a folder of images or a shard manifest"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (local or s3://)")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="panels",
        help="panels: colour PNGs, 16-bit depth and a side-by-side panel; cityscapes: label-id PNGs for the benchmark",
    )
    parser.add_argument(
        "--depth-metres",
        action="store_true",
        help="write metres, converting a disparity or inverse-depth model's output (disparity: manifest input only)",
    )


def run(args: argparse.Namespace) -> int:
    from padnet_dist.eval.predict_checkpoint import predict_checkpoint

    cfg = config_from_args(args)
    num_written = predict_checkpoint(
        args.checkpoint,
        args.input,
        args.out,
        output_format=args.format,
        depth_in_metres=args.depth_metres,
        storage_cfg=cfg.storage,
        config_files=args.config,
        overrides=args.overrides,
    )
    print(f"wrote predictions of {num_written} images to {args.out} ({args.format})")
    return 0
