"""``padnet-dist pipeline``: a run's data check, both phases, their evaluations and the report, as jobs on a backend.

Re-running the same command continues the run (``{run.dir}/pipeline.json``): finished jobs are kept, running ones
re-attached. ``--detach`` submits the coordinator itself as a job and returns.
"""

from __future__ import annotations

import argparse

from padnet_dist.config.cli_args import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--backend", choices=("local", "slurm", "ray"), default="", help="where jobs run (default: pipeline.backend)"
    )
    detach = parser.add_mutually_exclusive_group()
    detach.add_argument(
        "--detach", action="store_true", help="submit the coordinator as a job on the backend and return"
    )
    detach.add_argument("--no-detach", action="store_true", help="coordinate in this process (the default)")


def run(args: argparse.Namespace) -> int:
    from padnet_dist.pipeline.driver import detach, drive

    if args.detach:
        return detach(args.config, args.overrides, args.backend)
    return drive(args.config, args.overrides, args.backend)
