"""``padnet-dist sweep``: a paper table's rows (or given ablation files) as pipeline runs, and the result table.

Every row runs the coordinator's pipeline with the same data, seeds and schedule: ``--config`` gives the dataset
setting, each row's preset is laid over it, ``--seeds N`` runs seeds ``data.seed .. data.seed+N-1``. Re-running the
same command continues the sweep; ``--detach`` submits the sweep's driver itself as a job on the backend.
"""

from __future__ import annotations

import argparse

from padnet_dist.config.cli_args import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--table", default=None, help="the paper's table: 1, 2, 6 or figure5")
    parser.add_argument("--rows", nargs="+", default=[], metavar="FILE", help="ablation presets to run instead")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per row (default 1)")
    parser.add_argument(
        "--parallel", type=int, default=None, help="runs at once (default: 1 locally, all on slurm and ray)"
    )
    parser.add_argument("--backend", choices=("local", "slurm", "ray"), default="", help="default: pipeline.backend")
    detach = parser.add_mutually_exclusive_group()
    detach.add_argument(
        "--detach", action="store_true", help="submit the sweep's driver as a job on the backend and return"
    )
    detach.add_argument("--no-detach", action="store_true", help="drive the sweep in this process (the default)")


def run(args: argparse.Namespace) -> int:
    from padnet_dist.sweep.sweep import run_sweep

    if args.seeds < 1:
        raise SystemExit("--seeds must be >= 1")
    rows, overrides = split_rows(args.rows, args.overrides)
    return run_sweep(
        table=args.table, row_files=rows, config_files=args.config, overrides=overrides,
        backend=args.backend, num_seeds=args.seeds, parallel=args.parallel, detached=args.detach,
    )  # fmt: skip


def split_rows(rows: list[str], overrides: list[str]) -> tuple[list[str], list[str]]:
    """``--rows a.yaml b.yaml k=v``: argparse gives ``k=v`` to ``--rows``; it is an override (files end in .yaml)."""
    is_override = [("=" in r and not r.endswith((".yaml", ".yml"))) for r in rows]
    return [r for r, o in zip(rows, is_override) if not o], [*overrides, *(r for r, o in zip(rows, is_override) if o)]
