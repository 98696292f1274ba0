"""Looking into written shards (``padnet-dist shards inspect``): a manifest's summary, one decoded sample
(described, or dumped as arrays), and a verification of every shard against its manifest."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator

import numpy as np

from padnet_dist.config.run import StorageConfig
from padnet_dist.data.format import decode_sample, iter_tar_samples
from padnet_dist.data.manifest import Manifest, read_manifest
from padnet_dist.errors import UserError
from padnet_dist.storage import storage_for


def inspect_manifest(
    manifest_url: str,
    *,
    storage_cfg: StorageConfig | None = None,
    index: int | None = None,
    dump_dir: str | None = None,
    verify_shards: bool = False,
) -> Iterator[str]:
    """Report on a manifest, one paragraph at a time: its summary; with ``verify_shards`` the verification; with
    ``index`` or ``dump_dir`` sample ``index`` (default 0) described, and written to ``dump_dir``
    (``dump_sample``). A mismatch or a bad index is a UserError."""
    manifest = read_manifest(manifest_url, storage_cfg)
    yield summary(manifest, manifest_url)
    if verify_shards:
        yield verify(manifest, manifest_url, storage_cfg)
    if index is not None or dump_dir:
        index = index or 0
        sample = read_sample(manifest, manifest_url, index, storage_cfg)
        yield describe_sample(sample, index)
        if dump_dir:
            dump_sample(sample, dump_dir)
            yield f"wrote sample {index} ({sample['key']}) to {dump_dir}"


def summary(manifest: Manifest, manifest_url: str) -> str:
    classes = ", ".join(f"{i}:{name}" for i, name in enumerate(manifest.classes))
    lines = [
        f"manifest:       {manifest_url}",
        f"dataset/split:  {manifest.dataset}/{manifest.split}",
        f"format version: {manifest.format_version} (rgb {manifest.rgb_format})",
        f"samples:        {manifest.num_samples}",
        f"shards:         {manifest.num_shards} ({manifest.num_bytes / 1e6:.1f} MB)",
        f"classes:        {manifest.num_classes} ({classes}); ignore index {manifest.ignore_index}",
        f"camera defaults: {json.dumps(manifest.camera_defaults, sort_keys=True)}",
    ]
    return "\n".join(lines)


def read_sample(manifest: Manifest, manifest_url: str, index: int, storage_cfg: StorageConfig | None) -> dict:
    """Decode sample ``index`` by streaming its shard up to it."""
    shard_number, position = manifest.locate(index)
    url = manifest.shard_urls(manifest_url)[shard_number]
    with storage_for(url, storage_cfg).open_read(url) as stream:
        for i, (key, members) in enumerate(iter_tar_samples(stream, source=url)):
            if i == position:
                return decode_sample(members, key)
    raise UserError(f"{url} holds fewer samples than its manifest says: rewrite it with `padnet-dist shard ...`")


def describe_sample(sample: dict, index: int) -> str:
    depth, semantic = sample["depth"], sample["semantic"]
    valid = depth[depth > 0]
    depth_text = f"{valid.min():.2f}..{valid.max():.2f} m" if valid.size else "none valid"
    ids = np.unique(semantic)
    lines = [
        f"sample {index}: key {sample['key']}, {sample['rgb'].shape[1]}x{sample['rgb'].shape[0]} px",
        f"  depth: {depth_text}, {valid.size / depth.size:.1%} valid",
        f"  semantic ids: {', '.join(str(i) for i in ids)}",
        f"  instances: {'none' if sample['instances'] is None else len(np.unique(sample['instances']))}",
        f"  camera: {json.dumps(sample['camera'], sort_keys=True)}",
    ]
    return "\n".join(lines)


def dump_sample(sample: dict, directory: str) -> None:
    """rgb.npy (H, W, 3) uint8, semantic.npy (H, W) uint8, depth.npy (H, W) float32 m, instances.npy (H, W) int32
    (when present), camera.json, meta.json."""
    os.makedirs(directory, exist_ok=True)
    for name in ("rgb", "semantic", "depth", "instances"):
        if sample[name] is not None:
            np.save(os.path.join(directory, f"{name}.npy"), sample[name])
    for name in ("camera", "meta"):
        with open(os.path.join(directory, f"{name}.json"), "w") as f:
            json.dump(sample[name], f, indent=1, sort_keys=True)


def verify(manifest: Manifest, manifest_url: str, storage_cfg: StorageConfig | None) -> str:
    """Stream every shard, checking bytes, SHA-256 and sample keys against the manifest; UserError on mismatch.
    Returns a one-line report."""
    for shard, url in zip(manifest.shards, manifest.shard_urls(manifest_url)):
        digest, num_bytes = hashlib.sha256(), 0
        with storage_for(url, storage_cfg).open_read(url) as stream:
            while chunk := stream.read(8 << 20):
                digest.update(chunk)
                num_bytes += len(chunk)
        if num_bytes != shard.num_bytes or digest.hexdigest() != shard.sha256:
            raise UserError(f"{url} does not match its manifest (size or SHA-256): rewrite it with `padnet-dist shard`")
        with storage_for(url, storage_cfg).open_read(url) as stream:
            keys = [key for key, _ in iter_tar_samples(stream, source=url)]
        if keys != shard.keys:
            raise UserError(f"{url} holds other samples than its manifest lists: rewrite it with `padnet-dist shard`")
    return f"verified {manifest.num_shards} shards: sizes, SHA-256 and keys match"
