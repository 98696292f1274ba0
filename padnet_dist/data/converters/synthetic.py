"""Synthetic procedural scenes (``padnet_dist.data.synthetic_scene``) as samples: no download needed.

A job is ``SyntheticScene(seed, index, height, width, kind)``; the sample is a pure function of it. Without a
seed the seed is derived from the split name, so ``train`` and ``val`` never share scenes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from padnet_dist.data.converters import Conversion
from padnet_dist.errors import UserError

SUMMARY = "procedural room and street scenes, no download needed"
SCENE_KINDS = ("mixed", "room", "street")


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


@dataclass(frozen=True)
class SyntheticOptions:
    """What to render: ``num`` scenes of ``height`` x ``width`` pixels for ``split``; ``seed`` None derives it
    from the split's name (``split_seed``); ``scene`` mixed draws room or street per scene."""

    split: str
    num: int
    height: int = 256
    width: int = 512
    seed: int | None = None
    scene: str = "mixed"


def plan(options: SyntheticOptions) -> Conversion:
    """The jobs of ``options``; a one-line UserError naming a bad value."""
    if options.num < 1:
        raise UserError(f"num={options.num}: give a positive number of scenes")
    if options.height < 8 or options.width < 8:
        raise UserError(
            f"height={options.height} width={options.width}: synthetic scenes need at least 8x8 pixels"
        )
    if options.scene not in SCENE_KINDS:
        raise UserError(f"scene={options.scene!r}: choose one of {', '.join(SCENE_KINDS)}")
    seed = split_seed(options.split) if options.seed is None else options.seed
    if seed < 0:
        raise UserError(f"seed={seed}: use a non-negative integer")
    kind = None if options.scene == "mixed" else options.scene
    jobs = [SyntheticScene(seed, i, options.height, options.width, kind) for i in range(options.num)]
    return Conversion(
        jobs=jobs,
        load=load_scene,
        info=dataset_info(),
        source=f"{options.num} synthetic {options.height}x{options.width} scenes (seed {seed})",
    )


OPTIONS = SyntheticOptions
