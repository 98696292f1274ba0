"""Helpers of the training tests: tiny synthetic shards and the overrides of configs/tiny.yaml."""

from __future__ import annotations

import functools
import os

from tests.helpers import REPO_ROOT

# DeepSpeed compiles a C++ op on first use (~1.5 min); share the Makefile's cache so it happens once.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO_ROOT / ".cache" / "torch_extensions"))


def _load_synthetic(index: int, *, height: int, width: int) -> dict:
    from padnet_dist.data.synthetic_scene import render_scene

    r = render_scene(7, index, height=height, width=width)
    return {
        "key": f"synthetic-{index:05d}",
        "rgb": r.rgb,
        "semantic": r.semantic,
        "depth": r.depth,
        "instances": None,
        "camera": r.camera,
        "meta": {"dataset": "synthetic", "split": "train"},
    }


def write_tiny_shards(out_url: str, num: int = 16, storage_cfg=None, split: str = "train") -> str:
    """``num`` synthetic 96x128 samples as shards below ``out_url``; returns the manifest URL."""
    from padnet_dist.data.synthetic_scene import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE
    from padnet_dist.data.writer import DatasetInfo, write_shards

    info = DatasetInfo(name="synthetic", classes=list(SYNTHETIC_CLASSES), palette=list(SYNTHETIC_PALETTE))
    load = functools.partial(_load_synthetic, height=96, width=128)
    write_shards(
        list(range(num)), load, out_url=out_url, split=split, info=info, storage_cfg=storage_cfg,
        samples_per_shard=4, progress=False,
    )  # fmt: skip
    return out_url.rstrip("/") + f"/{split}.manifest.json"


def tiny_overrides(manifest: str, run_dir: str, *extra: str) -> list[str]:
    """Overrides of configs/tiny.yaml that every training test uses."""
    return [
        f"data.train_manifest={manifest}",
        "data.val_manifest=''",
        f"run.dir={run_dir}",
        *extra,
    ]
