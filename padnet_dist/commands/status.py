"""``padnet-dist status RUN_DIR [--json]``: every pipeline job's state, backend id, duration, retries and metrics."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="the run.dir of a `padnet-dist pipeline` run (path or s3://)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print pipeline.json with durations and metrics, for scripts"
    )
    parser.add_argument("--endpoint-url", default="", help="S3-compatible endpoint (default: AWS chain)")


def run(args: argparse.Namespace) -> int:
    import json

    from padnet_dist.config import StorageConfig
    from padnet_dist.pipeline.status import format_status, run_status

    status = run_status(args.run_dir, StorageConfig(endpoint_url=args.endpoint_url))
    print(json.dumps(status, indent=1, sort_keys=True) if args.json else format_status(status))
    return 0
