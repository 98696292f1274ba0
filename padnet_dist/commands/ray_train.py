"""``padnet-dist ray-train``: one phase with Ray Train on the Ray cluster this job runs on.

Run it as the entrypoint of a Ray job (``cluster/ray_submit.sh``) or on a node of a running cluster. It prints
rank 0's summary as one JSON line, as ``padnet-dist train`` does. Exit 75 (as ``train``): the ranks committed a
checkpoint after SIGTERM and Ray had no restart left (``--max-failures``); submitting it again resumes there.
"""

from __future__ import annotations

import argparse
import json
import sys

from padnet_dist.config.cli_args import add_config_arguments, config_from_args
from padnet_dist.pipeline.backend import EXIT_INTERRUPTED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--num-workers", type=int, required=True, metavar="N", help="Ray Train workers (ranks)")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker (nccl)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0, metavar="C", help="CPUs Ray reserves per worker")
    parser.add_argument(
        "--max-failures",
        type=int,
        default=0,
        metavar="K",
        help="restart the worker group up to K times after a worker dies or is stopped by SIGTERM; each restart "
        "resumes from the newest committed checkpoint in run.dir",
    )
    parser.add_argument(
        "--max-preemption-failures",
        type=int,
        default=-1,
        metavar="K",
        help="restart up to K times after a node of the run is preempted (-1: no limit; counted apart from "
        "--max-failures); the preemption notice makes every rank commit after its current step",
    )
    parser.add_argument(
        "--address", default="", metavar="ADDR", help="Ray cluster (default: RAY_ADDRESS, else the local head)"
    )
    parser.add_argument("--name", default="", help="Ray run name (default: phase{p}); same name continues the run")
    parser.add_argument(
        "--storage-path", default="", metavar="URL", help="Ray's run record (default: {run.dir}/ray; path or s3://)"
    )


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)  # validate before asking Ray for anything
    from padnet_dist.launch.ray_train import TrainingInterrupted, run_on_ray

    try:
        summary = run_on_ray(
            cfg,
            num_workers=args.num_workers,
            use_gpu=args.use_gpu,
            cpus_per_worker=args.cpus_per_worker,
            max_failures=args.max_failures,
            max_preemption_failures=args.max_preemption_failures,
            address=args.address,
            name=args.name,
            storage_path=args.storage_path,
        )
    except TrainingInterrupted as e:
        print(f"padnet-dist ray-train: {e}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    print(json.dumps(summary, default=str), flush=True)
    return 0
