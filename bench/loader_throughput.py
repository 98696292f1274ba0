"""Loader throughput at Cityscapes resolution: what the loader costs per worker process, and S3 against disk.

Writes synthetic 1024x2048 street scenes to PNG and to JPEG shards in a temp dir, then measures in the same run:
  encodings       rgb member size, decode time with Pillow and torchvision (and Pillow's JPEG draft mode at 1/2,
                  what a 0.5 scale could decode), JPEG quality (PSNR against the PNG original)
  decode-only     ``decode_sample`` of every member (the issue's reference rate) and of the members training reads
  stages          per-sample decode, augment (640x640 scale/crop/flip), targets on the heads' 1/4 grid (and the
                  full-resolution way, for comparison), collate
  loader          ShardLoader samples/s in one process (= per DataLoader worker), its ratio to decode-only (target
                  >= 0.9), and with 2 workers
  S3              raw read MB/s and loader samples/s from a moto_server endpoint (started here), with and
                  without read-ahead, and through the node-local cache, against local disk.
Rates are per CPU-second of this process (``time.process_time``) and per wall second: on a machine shared with
other jobs the CPU-time figures are the stable ones (the wall figures include waiting for a core).
Not a test: prints figures and ratios. Run: ``.venv/bin/python bench/loader_throughput.py`` (a few minutes).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' S3 endpoint helper

from padnet_dist.config.data import DataConfig
from padnet_dist.config.run import StorageConfig
from padnet_dist.data.augment import augment_sample, draw_params, sample_rng
from padnet_dist.data.format import TRAINING_KINDS, _image, _rgb, decode_sample, iter_tar_samples
from padnet_dist.data.loader import ShardLoader, build_train_loader
from padnet_dist.data.synthetic_scene import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE, render_scene
from padnet_dist.data.targets import (
    contours_at_size,
    contours_from_labels,
    intermediate_size,
    normals_at_size,
    normals_from_depth,
)
from padnet_dist.data.writer import DatasetInfo, write_shards
from padnet_dist.storage import storage_for
from padnet_dist.world import World
from tests.helpers.s3 import MotoServer

HEIGHT, WIDTH = 1024, 2048
CROP = 640
CITYSCAPES_SCALES = [0.5, 0.75, 1.0, 1.25, 1.75]


@functools.cache
def _render(index: int):
    return render_scene(0, index, HEIGHT, WIDTH, kind="street")


def load_scene(index: int, num_unique: int) -> dict:
    """A rendered street scene; scenes repeat after ``num_unique`` to bound the setup time."""
    r = _render(index % num_unique)
    return {
        "key": f"scene{index:05d}",
        "rgb": r.rgb,
        "semantic": r.semantic,
        "depth": r.depth,
        "instances": r.instances,
        "camera": r.camera,
        "meta": r.meta,
    }


def cpu_and_wall(fn, repeat: int = 3) -> tuple[float, float]:
    """Median CPU seconds of this process and median wall seconds of one call of ``fn`` over ``repeat`` calls."""
    cpu, wall = [], []
    for _ in range(repeat):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return statistics.median(cpu), statistics.median(wall)


def epoch_rate(loader: ShardLoader, epoch: int = 0) -> tuple[float, float]:
    """Samples per CPU second of this process and per wall second over one epoch (first batch included: start-up
    is part of the cost). The CPU figure is meaningful for ``num_workers=0`` only."""
    loader.set_epoch(epoch)
    c, w = time.process_time(), time.perf_counter()
    num = sum(int(b["valid"].sum()) for b in loader)
    return num / (time.process_time() - c), num / (time.perf_counter() - w)


def write_dataset(out: str, args, rgb_format: str) -> tuple[str, list[str]]:
    info = DatasetInfo(name="synthetic", classes=list(SYNTHETIC_CLASSES), palette=list(SYNTHETIC_PALETTE))
    write_shards(
        list(range(args.num_samples)),
        functools.partial(load_scene, num_unique=args.num_unique),
        out_url=out,
        split="train",
        info=info,
        samples_per_shard=args.samples_per_shard,
        rgb_format=rgb_format,
        progress=False,
    )
    return os.path.join(out, "train.manifest.json"), sorted(
        os.path.join(out, f) for f in os.listdir(out) if f.endswith(".tar")
    )


def encodings_report(encoded: dict[str, list]) -> None:
    """rgb member size, decode time by decoder, JPEG PSNR against the lossless original."""
    from PIL import Image

    print("rgb member (1024x2048)         size    Pillow   torchvision   quality")
    for fmt, samples in encoded.items():
        suffix, data = next((s, b) for s, b in samples[0][1].items() if s.startswith("rgb."))
        pil_s, _ = cpu_and_wall(functools.partial(_image, data), 5)
        tv_s, _ = cpu_and_wall(functools.partial(_rgb, suffix, data), 5)
        if fmt == "png":
            quality = "lossless"
        else:
            original = _image(encoded["png"][0][1]["rgb.png"]).astype(np.float64)
            mse = float(((_rgb(suffix, data).astype(np.float64) - original) ** 2).mean())
            quality = f"PSNR {10 * np.log10(255**2 / mse):.1f} dB (q95, 4:4:4)"
        print(
            f"  {fmt:5s}                    {len(data) / 1e6:6.2f} MB {pil_s * 1e3:6.1f} ms  {tv_s * 1e3:6.1f} ms   {quality}"
        )
        if fmt == "jpeg":

            def draft(data: bytes = data) -> None:
                with Image.open(io.BytesIO(data)) as img:
                    img.draft("RGB", (img.width // 2, img.height // 2))
                    img.load()

            draft_s, _ = cpu_and_wall(draft, 5)
            print(f"  jpeg, Pillow draft at 1/2 (what a 0.5 scale needs): {draft_s * 1e3:.1f} ms")


def stage_costs(samples: list, batch_size: int) -> dict[str, float]:
    """Per-sample CPU seconds of each loader stage over ``samples`` ((key, members) pairs)."""
    costs: dict[str, float] = {}
    costs["decode (all members)"] = cpu_and_wall(lambda: [decode_sample(m, k) for k, m in samples])[0]
    decoded: list = []
    costs["decode (training members)"] = cpu_and_wall(
        lambda: decoded.__setitem__(slice(None), [decode_sample(m, k, TRAINING_KINDS) for k, m in samples])
    )[0]

    def augment_all() -> list:
        return [
            augment_sample(
                s,
                draw_params(sample_rng(0, 0, i), HEIGHT, WIDTH, scales=CITYSCAPES_SCALES, crop_height=CROP,
                            crop_width=CROP, flip_prob=0.5),
                crop_height=CROP, crop_width=CROP, divide_depth_by_scale=True, ignore_index=255,
            )
            for i, s in enumerate(decoded)
        ]  # fmt: skip

    augmented: list = []
    costs["augment 640x640"] = cpu_and_wall(lambda: augmented.__setitem__(slice(None), augment_all()))[0]
    groups = [augmented[i : i + batch_size] for i in range(0, len(augmented), batch_size)]
    stacked = [
        (
            torch.stack([a["depth"] for a in g]),
            torch.stack([a["semantic"] for a in g]),
            [torch.tensor([a["camera"][k] for a in g], dtype=torch.float64) for k in ("fx", "fy", "cx", "cy")],
        )
        for g in groups
    ]
    size = intermediate_size(CROP, CROP)
    costs["normals at 1/4"] = cpu_and_wall(lambda: [normals_at_size(d, *c, size) for d, _, c in stacked])[0]
    costs["contours at 1/4"] = cpu_and_wall(lambda: [contours_at_size(s, size) for _, s, _ in stacked])[0]
    costs["(normals full res)"] = cpu_and_wall(lambda: [normals_from_depth(d, *c) for d, _, c in stacked], 1)[0]
    costs["(contours full res)"] = cpu_and_wall(lambda: [contours_from_labels(s) for _, s, _ in stacked], 1)[0]
    return {k: v / len(samples) for k, v in costs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=12)
    parser.add_argument("--num-unique", type=int, default=4, help="distinct rendered scenes (render cost ~2 s each)")
    parser.add_argument("--samples-per-shard", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--no-s3", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # what a DataLoader worker gets
    tmp = tempfile.mkdtemp(prefix="padnet-loader-bench-")
    moto = MotoServer()
    try:
        t0 = time.perf_counter()
        datasets, encoded = {}, {}
        for fmt in ("png", "jpeg"):
            out = os.path.join(tmp, fmt)
            manifest_url, shard_paths = write_dataset(out, args, fmt)
            num_bytes = sum(os.path.getsize(p) for p in shard_paths)
            datasets[fmt] = (out, manifest_url, shard_paths, num_bytes)
            encoded[fmt] = []
            for path in shard_paths:
                with open(path, "rb") as f:
                    encoded[fmt].extend(iter_tar_samples(f, path))
            print(f"setup {fmt}: {args.num_samples} samples {HEIGHT}x{WIDTH} in {len(shard_paths)} shards, "
                  f"{num_bytes / args.num_samples / 1e6:.2f} MB/sample")  # fmt: skip
        print(f"setup: {time.perf_counter() - t0:.0f} s; {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f} (other jobs share them); 1 torch thread; per-sample CPU ms below")  # fmt: skip
        encodings_report(encoded)

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
        for fmt in ("png", "jpeg"):
            out, manifest_url, shard_paths, num_bytes = datasets[fmt]
            costs = stage_costs(encoded[fmt], args.batch_size)
            loader = build_train_loader(cfg, World(), manifest_url=manifest_url)
            epoch_rate(loader, 1)  # warm-up: first-call costs (imports, allocator) are not the loader's
            rates = [epoch_rate(loader, e) for e in (0, 2)]
            cpu_rate = statistics.mean(r[0] for r in rates)
            wall_rate = statistics.mean(r[1] for r in rates)
            decode_all, decode_train = costs["decode (all members)"], costs["decode (training members)"]
            stages = ("augment 640x640", "normals at 1/4", "contours at 1/4")
            collate = 1 / cpu_rate - decode_train - sum(costs[k] for k in stages)
            print(f"== {fmt} shards: per-sample CPU ms")
            for name, value in [*costs.items(), ("collate, reading, rest", collate)]:
                print(f"  {name:28s} {value * 1e3:7.1f}")
            print(f"  loader, 1 process          {cpu_rate:7.2f} samples/CPU-s ({wall_rate:.2f}/wall-s) "
                  f"= {cpu_rate * decode_all:.2f} x decode-only (all members) "
                  f"= {cpu_rate * decode_train:.2f} x decoding the training members only")  # fmt: skip
        out, manifest_url, shard_paths, num_bytes = datasets["png"]
        _, two_worker_rate = epoch_rate(
            build_train_loader(dataclasses.replace(cfg, num_workers=2), World(), manifest_url=manifest_url)
        )
        print(
            f"loader, 2 workers (png)      {two_worker_rate:7.2f} samples/wall-s total "
            f"({os.cpu_count()} CPUs shared with other jobs)"
        )
        local_rate = epoch_rate(build_train_loader(cfg, World(), manifest_url=manifest_url))[1]

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

        local_read_s = cpu_and_wall(lambda: read_all(storage_for(out), shard_paths), 1)[1]
        s3_read_s = cpu_and_wall(lambda: read_all(s3, s3_urls), 1)[1]
        print(
            f"raw read             local {num_bytes / local_read_s / 1e6:7.0f} MB/s   "
            f"S3 (moto) {num_bytes / s3_read_s / 1e6:6.0f} MB/s"
        )
        s3_loader = build_train_loader(cfg, World(), manifest_url=s3_manifest, storage_cfg=storage_cfg)
        s3_rate = epoch_rate(s3_loader)[1]
        no_ahead = ShardLoader(dataclasses.replace(s3_loader.spec, read_ahead=False))
        s3_plain_rate = epoch_rate(no_ahead)[1]
        cached = build_train_loader(
            dataclasses.replace(cfg, cache_dir=os.path.join(tmp, "cache")),
            World(),
            manifest_url=s3_manifest,
            storage_cfg=storage_cfg,
        )
        cold, warm = epoch_rate(cached, 0)[1], epoch_rate(cached, 1)[1]
        print(f"loader S3 read-ahead {s3_rate:7.2f} samples/wall-s = {s3_rate / local_rate:.2f} x local disk")
        print(
            f"loader S3 plain      {s3_plain_rate:7.2f} samples/wall-s = {s3_plain_rate / local_rate:.2f} x local disk"
        )
        print(
            f"loader S3 cache      {cold:7.2f} samples/wall-s first epoch, {warm:.2f} after "
            f"= {cold / local_rate:.2f} / {warm / local_rate:.2f} x local disk"
        )
        return 0
    finally:
        moto.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
