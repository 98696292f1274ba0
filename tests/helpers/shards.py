"""Tiny real shard sets for loader tests, written with the real writer."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile

import numpy as np

from padnet_dist.config.data import DataConfig
from padnet_dist.data.manifest import Manifest, ShardInfo, read_manifest, write_manifest
from padnet_dist.data.writer import DatasetInfo, write_shards
from padnet_dist.storage import join_url, storage_for

NUM_CLASSES = 8
INFO = DatasetInfo(
    name="tiny", classes=[f"c{i}" for i in range(NUM_CLASSES)], palette=[(i, i, i) for i in range(NUM_CLASSES)]
)


def make_sample(index: int, height: int = 12, width: int = 16) -> dict:
    """A deterministic random sample: label blocks, a tilted depth plane with invalid holes, instances."""
    rng = np.random.default_rng(index)
    semantic = np.repeat(np.repeat(rng.integers(0, NUM_CLASSES, (3, 4)), height // 3, 0), width // 4, 1)
    semantic = semantic.astype(np.uint8)
    semantic[0, :2] = 255
    v, u = np.mgrid[0:height, 0:width]
    depth = (5.0 + 0.1 * u + 0.05 * v + index).astype(np.float32)
    depth[rng.random((height, width)) < 0.1] = 0.0
    return {
        "key": f"s{index:05d}",
        "rgb": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "semantic": semantic,
        "depth": depth,
        "instances": np.where(semantic == 255, 0, semantic.astype(np.int32) * 1000 + 1).astype(np.int32),
        "camera": {"fx": 20.0, "fy": 21.0, "cx": (width - 1) / 2, "cy": (height - 1) / 2},
        "meta": {"index": index},
    }


def write_dataset(out_url: str, shard_sizes: list[int], storage_cfg=None, split: str = "train") -> str:
    """Shards of the given (uneven) sizes under ``out_url``; returns the manifest URL.

    Each size is written as its own part (the writer makes equal shards), then the parts are published
    together under one manifest.
    """
    shards, start = [], 0
    for part, size in enumerate(shard_sizes):
        if size == 0:
            shards.append(_empty_shard(out_url, f"{split}{part}-empty.tar", storage_cfg))
            continue
        manifest = write_shards(
            list(range(start, start + size)),
            make_sample,
            out_url=out_url,
            split=f"{split}{part}",
            info=INFO,
            storage_cfg=storage_cfg,
            samples_per_shard=size,
            progress=False,
        )
        shards.extend(manifest.shards)
        start += size
    merged = dataclasses.replace(manifest, split=split, shards=shards, num_samples=start)
    url = join_url(out_url, f"{split}.manifest.json")
    write_manifest(merged, url, storage_cfg)
    return url


def _empty_shard(out_url: str, name: str, storage_cfg) -> ShardInfo:
    buf = io.BytesIO()
    tarfile.open(fileobj=buf, mode="w").close()
    storage_for(out_url, storage_cfg).write_bytes(join_url(out_url, name), buf.getvalue())
    return ShardInfo(
        name=name, num_samples=0, num_bytes=len(buf.getvalue()), sha256=hashlib.sha256(buf.getvalue()).hexdigest()
    )


def data_config(**overrides) -> DataConfig:
    values = dict(
        batch_size=2,
        eval_batch_size=2,
        num_workers=0,
        crop_height=8,
        crop_width=10,
        scales=[0.75, 1.0, 1.5],
        shuffle=True,
        shuffle_block_batches=2,
        seed=1,
    )
    values.update(overrides)
    return DataConfig(**values)


def manifest_keys(url: str, storage_cfg=None) -> list[str]:
    manifest: Manifest = read_manifest(url, storage_cfg)
    return [k for s in manifest.shards for k in s.keys]


__all__ = ["data_config", "make_sample", "manifest_keys", "write_dataset"]
