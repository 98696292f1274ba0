"""``padnet-dist export``: a checkpoint's consolidated fp32 state dict as one ``torch.save`` file."""

from __future__ import annotations

import argparse
import io

import torch

from padnet_dist.config import StorageConfig
from padnet_dist.storage import storage_for


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="URL", help="a checkpoint, phase or run dir (newest)")
    parser.add_argument("--out", required=True, metavar="FILE", help="output path or s3:// URL of the state dict")
    parser.add_argument("--endpoint-url", default="", help="S3-compatible endpoint (MinIO, moto, ...)")


def run(args: argparse.Namespace) -> int:
    from padnet_dist.train.checkpoint import read_inference_checkpoint

    storage_cfg = StorageConfig(endpoint_url=args.endpoint_url)
    cfg, state_dict = read_inference_checkpoint(args.checkpoint, storage_cfg)
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    storage_for(args.out, storage_cfg).write_bytes(args.out, buf.getvalue())
    num_params = sum(t.numel() for t in state_dict.values() if t.is_floating_point())
    print(f"wrote {args.out}: {len(state_dict)} tensors, {num_params} values, model {cfg.model.backbone}")
    return 0
