"""``padnet-dist train``: one phase on the ranks the launcher gives, or on ``--nproc N`` local ranks."""

from __future__ import annotations

import argparse
import json
import sys

from padnet_dist.config.cli_args import add_config_arguments, config_from_args

EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: stopped by a signal after committing a checkpoint; run again to resume


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--nproc",
        type=int,
        default=0,
        metavar="N",
        help="start N local ranks (CPU: gloo) instead of running as the rank torchrun/srun started",
    )


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)  # validate before starting any rank
    from padnet_dist import launch

    if args.nproc:
        argv = [sys.executable, "-m", "padnet_dist.cli", "train"]
        for path in args.config:
            argv += ["--config", path]
        return launch.spawn_local(args.nproc, argv + list(args.overrides))

    from padnet_dist.train import train

    world = launch.current_world()
    try:
        summary = train(cfg, world)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():  # a clean exit of gloo/nccl; Ray workers own their group and never get here
            dist.destroy_process_group()
    if world.is_main:
        print(json.dumps(summary, default=str))
    if summary["stopped_by_signal"] and not summary["finished"]:
        # Not done yet (preempted, time limit, scancel): a checkpoint is committed, but a job scheduled
        # `afterok` on this one must not start. Re-running the same command resumes.
        return EXIT_INTERRUPTED
    return 0
