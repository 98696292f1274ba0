"""``padnet-dist shards inspect MANIFEST_URL [--index N] [--dump DIR] [--verify]``."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    inspect = sub.add_parser("inspect", help="summarise a manifest; optionally decode and dump one sample")
    inspect.add_argument("manifest_url", help="path or s3:// URL of {split}.manifest.json")
    inspect.add_argument("--index", type=int, default=None, help="describe sample N (0-based over the split)")
    inspect.add_argument("--dump", metavar="DIR", help="write sample N (default 0) as .npy arrays and camera.json")
    inspect.add_argument("--verify", action="store_true", help="check every shard's size, SHA-256 and samples")
    inspect.add_argument("--endpoint-url", default="", help="S3-compatible endpoint (default: AWS chain)")
    inspect.add_argument("--region", default="", help="S3 region (default: AWS chain)")


def run(args: argparse.Namespace) -> int:
    from padnet_dist.config import StorageConfig
    from padnet_dist.data.inspect import inspect_manifest

    storage_cfg = StorageConfig(endpoint_url=args.endpoint_url, region=args.region)
    for paragraph in inspect_manifest(
        args.manifest_url, storage_cfg=storage_cfg, index=args.index, dump_dir=args.dump, verify_shards=args.verify
    ):
        print(paragraph, flush=True)
    return 0
