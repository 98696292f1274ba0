"""Synthetic procedural scenes (``padnet_dist.data.synthetic_scene``) as samples: no download needed.

A job is ``SyntheticScene(seed, index, height, width, kind)``; the sample is a pure function of it. Without
``--seed`` the seed is derived from the split name, so ``train`` and ``val`` never share scenes.
"""

from __future__ import annotations

import argparse
import zlib
from dataclasses import dataclass

from padnet_dist.data.converters import Conversion
from padnet_dist.errors import UserError

SUMMARY = "procedural room and street scenes (--num N), no download needed"


@dataclass(frozen=True)
class SyntheticScene:
    """One scene to render. Picklable job with a stable repr (the writer fingerprints shards by it)."""

    seed: int
    index: int
    height: int
    width: int
    kind: str | None = None  # None: room or street, drawn per scene


def split_seed(split: str) -> int:
    """The default seed of a split: a stable hash of its name."""
    return zlib.crc32(split.encode()) & 0x7FFFFFFF


def load_scene(job: SyntheticScene) -> dict:
    """Render one scene as a sample dict (docs/contracts.md); instances are class*1000+k for objects."""
    from padnet_dist.data.synthetic_scene import render_scene

    scene = render_scene(job.seed, job.index, job.height, job.width, kind=job.kind)
    return {
        "key": f"synth_{job.seed}_{job.index:07d}",
        "rgb": scene.rgb,
        "semantic": scene.semantic,
        "depth": scene.depth,
        "instances": scene.instances,
        "camera": scene.camera,
        "meta": {"dataset": "synthetic", **scene.meta},
    }


def dataset_info():
    from padnet_dist.data.synthetic_scene import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE
    from padnet_dist.data.writer import DatasetInfo

    return DatasetInfo(name="synthetic", classes=list(SYNTHETIC_CLASSES), palette=list(SYNTHETIC_PALETTE))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num", type=int, required=True, help="number of scenes")
    parser.add_argument("--height", type=int, default=256, help="image height in pixels (default 256)")
    parser.add_argument("--width", type=int, default=512, help="image width in pixels (default 512)")
    parser.add_argument("--seed", type=int, default=None, help="scene family (default: derived from --split)")
    parser.add_argument("--scene", choices=("mixed", "room", "street"), default="mixed", help="scene kind")
    parser.add_argument("--split", required=True, help="split name, e.g. train or val")


def plan(args: argparse.Namespace) -> Conversion:
    if args.num < 1:
        raise UserError(f"--num {args.num}: give a positive number of scenes")
    if args.height < 8 or args.width < 8:
        raise UserError(f"--height {args.height} --width {args.width}: synthetic scenes need at least 8x8 pixels")
    seed = split_seed(args.split) if args.seed is None else args.seed
    if seed < 0:
        raise UserError(f"--seed {seed}: use a non-negative integer")
    kind = None if args.scene == "mixed" else args.scene
    jobs = [SyntheticScene(seed, i, args.height, args.width, kind) for i in range(args.num)]
    return Conversion(
        jobs=jobs,
        load=load_scene,
        info=dataset_info(),
        source=f"{args.num} synthetic {args.height}x{args.width} scenes (seed {seed})",
    )
