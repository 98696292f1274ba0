"""``padnet-dist export``: a checkpoint's consolidated fp32 state dict as one ``torch.save`` file."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="URL", help="a checkpoint, phase or run dir (newest)")
    parser.add_argument("--out", required=True, metavar="FILE", help="output path or s3:// URL of the state dict")
    parser.add_argument("--endpoint-url", default="", help="S3-compatible endpoint (MinIO, moto, ...)")


def run(args: argparse.Namespace) -> int:
    from padnet_dist.config import StorageConfig
    from padnet_dist.eval.inference import export_state_dict

    summary = export_state_dict(args.checkpoint, args.out, StorageConfig(endpoint_url=args.endpoint_url))
    print(f"wrote {args.out}: {summary.num_tensors} tensors, {summary.num_values} values, model {summary.backbone}")
    return 0
