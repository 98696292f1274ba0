"""Loader throughput at Cityscapes resolution: what the loader costs per worker process, and S3 against disk.

Writes synthetic 1024x2048 street scenes to shards in a temp dir, then measures in the same run:
  decode-only     decode_sample over the stored encodings (the floor any loader pays)
  augment/targets the per-sample cost of the 640x640 scale/crop/flip and of normals + contours
  loader          ShardLoader samples/s in one process (= per DataLoader worker) and with 2 workers
  S3              raw read MB/s and loader samples/s from a moto_server endpoint (started here), with and
                  without read-ahead, and through the node-local cache, against local disk.
Not a test: prints figures and ratios. Run: ``.venv/bin/python bench/loader_throughput.py`` (a few minutes).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' S3 endpoint helper

from padnet_dist.config.data import DataConfig
from padnet_dist.config.run import StorageConfig
from padnet_dist.data.augment import augment_sample, draw_params, sample_rng
from padnet_dist.data.format import decode_sample, iter_tar_samples
from padnet_dist.data.loader import ShardLoader, build_train_loader
from padnet_dist.data.synthetic_scene import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE, render_scene
from padnet_dist.data.targets import contours_from_labels, normals_from_depth
from padnet_dist.data.writer import DatasetInfo, write_shards
from padnet_dist.storage import storage_for
from padnet_dist.world import World
from tests.helpers.s3 import MotoServer

HEIGHT, WIDTH = 1024, 2048
CROP = 640
CITYSCAPES_SCALES = [0.5, 0.75, 1.0, 1.25, 1.75]


def load_scene(index: int, num_unique: int) -> dict:
    """A rendered street scene; scenes repeat after ``num_unique`` to bound the setup time."""
    r = render_scene(0, index % num_unique, HEIGHT, WIDTH, kind="street")
    return {
        "key": f"scene{index:05d}",
        "rgb": r.rgb,
        "semantic": r.semantic,
        "depth": r.depth,
        "instances": r.instances,
        "camera": r.camera,
        "meta": r.meta,
    }


def timed(fn, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def epoch_rate(loader: ShardLoader, epoch: int = 0) -> float:
    """Samples per second over one epoch (first batch included: start-up is part of the cost)."""
    loader.set_epoch(epoch)
    start = time.perf_counter()
    num = sum(int(b["valid"].sum()) for b in loader)
    return num / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=12)
    parser.add_argument("--num-unique", type=int, default=6, help="distinct rendered scenes (render cost ~2 s each)")
    parser.add_argument("--samples-per-shard", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--no-s3", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # what a DataLoader worker gets
    tmp = tempfile.mkdtemp(prefix="padnet-loader-bench-")
    moto = MotoServer()
    try:
        t0 = time.perf_counter()
        info = DatasetInfo(name="synthetic", classes=list(SYNTHETIC_CLASSES), palette=list(SYNTHETIC_PALETTE))

        out = os.path.join(tmp, "ds")
        write_shards(
            list(range(args.num_samples)),
            functools.partial(load_scene, num_unique=args.num_unique),
            out_url=out,
            split="train",
            info=info,
            samples_per_shard=args.samples_per_shard,
            progress=False,
        )
        manifest_url = os.path.join(out, "train.manifest.json")
        shard_paths = sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".tar"))
        num_bytes = sum(os.path.getsize(p) for p in shard_paths)
        print(
            f"setup: {args.num_samples} samples {HEIGHT}x{WIDTH} in {len(shard_paths)} shards, "
            f"{num_bytes / args.num_samples / 1e6:.2f} MB/sample, {time.perf_counter() - t0:.0f} s"
        )

        encoded = []
        for path in shard_paths:
            with open(path, "rb") as f:
                encoded.extend(iter_tar_samples(f, path))
        decoded = []
        decode_s = timed(lambda: decoded.extend(decode_sample(m, k) for k, m in encoded)) / len(encoded)
        cfg = DataConfig(
            batch_size=args.batch_size,
            num_workers=0,
            crop_height=CROP,
            crop_width=CROP,
            scales=CITYSCAPES_SCALES,
            shuffle=True,
            shuffle_block_batches=2,
            seed=0,
        )

        def augment_all() -> list:
            outs = []
            for i, s in enumerate(decoded):
                p = draw_params(
                    sample_rng(0, 0, i),
                    HEIGHT,
                    WIDTH,
                    scales=CITYSCAPES_SCALES,
                    crop_height=CROP,
                    crop_width=CROP,
                    flip_prob=0.5,
                )
                outs.append(
                    augment_sample(
                        s, p, crop_height=CROP, crop_width=CROP, divide_depth_by_scale=True, ignore_index=255
                    )
                )
            return outs

        augmented = augment_all()
        augment_s = timed(augment_all) / len(decoded)
        batches = [augmented[i : i + args.batch_size] for i in range(0, len(augmented), args.batch_size)]

        def targets(kind: str) -> None:
            for group in batches:
                if kind == "normals":
                    depth = torch.stack([a["depth"] for a in group])
                    cam = {
                        k: torch.tensor([a["camera"][k] for a in group], dtype=torch.float64)
                        for k in "fx fy cx cy".split()
                    }
                    normals_from_depth(depth, cam["fx"], cam["fy"], cam["cx"], cam["cy"])
                else:
                    contours_from_labels(torch.stack([a["semantic"] for a in group]), 255, 1)

        normals_s = timed(lambda: targets("normals"), 2) / len(decoded)
        contour_s = timed(lambda: targets("contours"), 2) / len(decoded)
        local_rate = epoch_rate(build_train_loader(cfg, World(), manifest_url=manifest_url))
        two_worker_rate = epoch_rate(
            build_train_loader(dataclasses.replace(cfg, num_workers=2), World(), manifest_url=manifest_url)
        )

        print(f"decode only          {1 / decode_s:7.2f} samples/s  ({decode_s * 1e3:.0f} ms/sample)")
        print(f"augment 640x640      {augment_s * 1e3:7.0f} ms/sample")
        print(
            f"targets (normals)    {normals_s * 1e3:7.1f} ms/sample   contours {contour_s * 1e3:.1f} ms/sample  "
            f"= {(normals_s + contour_s) / (decode_s + augment_s + normals_s + contour_s):.1%} of the per-sample work"
        )
        print(f"loader, 1 process    {local_rate:7.2f} samples/s  = {local_rate * decode_s:.2f} x decode-only rate")
        print(
            f"loader, 2 workers    {two_worker_rate:7.2f} samples/s  total ({two_worker_rate / 2:.2f} per worker; "
            f"{os.cpu_count()} CPUs shared with other jobs)"
        )

        if args.no_s3:
            return 0
        endpoint = moto.start()
        for name, value in {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            os.environ.setdefault(name, value)
        storage_cfg = StorageConfig(endpoint_url=endpoint)
        s3 = storage_for("s3://bench/", storage_cfg)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
        for f in os.listdir(out):
            s3.put_file(os.path.join(out, f), f"s3://bench/ds/{f}")
        s3_manifest = "s3://bench/ds/train.manifest.json"
        s3_urls = [f"s3://bench/ds/{os.path.basename(p)}" for p in shard_paths]

        def read_all(storage, urls) -> None:
            for u in urls:
                with storage.open_read(u) as f:
                    while f.read(1 << 20):
                        pass

        local_read_s = timed(lambda: read_all(storage_for(out), shard_paths))
        s3_read_s = timed(lambda: read_all(s3, s3_urls))
        print(
            f"raw read             local {num_bytes / local_read_s / 1e6:7.0f} MB/s   "
            f"S3 (moto) {num_bytes / s3_read_s / 1e6:6.0f} MB/s"
        )
        s3_loader = build_train_loader(cfg, World(), manifest_url=s3_manifest, storage_cfg=storage_cfg)
        s3_rate = epoch_rate(s3_loader)
        no_ahead = ShardLoader(dataclasses.replace(s3_loader.spec, read_ahead=False))
        s3_plain_rate = epoch_rate(no_ahead)
        cached = build_train_loader(
            dataclasses.replace(cfg, cache_dir=os.path.join(tmp, "cache")),
            World(),
            manifest_url=s3_manifest,
            storage_cfg=storage_cfg,
        )
        cold, warm = epoch_rate(cached, 0), epoch_rate(cached, 1)
        print(f"loader S3 read-ahead {s3_rate:7.2f} samples/s  = {s3_rate / local_rate:.2f} x local disk")
        print(f"loader S3 plain      {s3_plain_rate:7.2f} samples/s  = {s3_plain_rate / local_rate:.2f} x local disk")
        print(
            f"loader S3 cache      {cold:7.2f} samples/s first epoch, {warm:.2f} after "
            f"= {cold / local_rate:.2f} / {warm / local_rate:.2f} x local disk"
        )
        return 0
    finally:
        moto.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
