"""``padnet-dist train``: one phase on the ranks the launcher gives, or on ``--nproc N`` local ranks."""

from __future__ import annotations

import argparse
import json
import signal

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
    from padnet_dist.train.stop import StopRequest

    # From the first line: a SIGTERM while this rank starts up is passed on to the training loop (which commits
    # after its first step) instead of killing the rank before it can.
    held = StopRequest()
    cfg = config_from_args(args)
    from padnet_dist.launch.preflight import check_training_inputs

    check_training_inputs(cfg)  # before any rank, process group or DeepSpeed op build
    if args.nproc:
        from padnet_dist.launch.local import cli_rank_argv, run_local_ranks

        command = ["train"]
        for path in args.config:
            command += ["--config", path]
        held.restore()  # the launcher passes signals on to its ranks
        return run_local_ranks(args.nproc, cli_rank_argv(command + list(args.overrides)))

    from padnet_dist.launch.env import current_world
    from padnet_dist.train import train

    world = current_world()
    try:
        summary = train(cfg, world)
    finally:
        # This rank is done (committed, or failed): a SIGTERM now, e.g. from srun --kill-on-bad-exit once another
        # rank exited, must not turn its exit code into 143. SIG_IGN, because Python resets handlers of its own
        # to the default while it shuts down.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
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
