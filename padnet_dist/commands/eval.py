"""``padnet-dist eval``: score a checkpoint on a split, on the launcher's ranks or ``--nproc N`` local ones.

The network comes from the checkpoint (its ``config.yaml`` and weights). The other settings (which manifest,
batch size, workers, device, storage endpoint) are the checkpoint's config with ``--config`` files and ``key=value``
overrides applied on top, so ``padnet-dist eval --checkpoint URL`` alone evaluates on the run's own validation
split. Rank 0 prints a table and writes ``{checkpoint}/metrics.json``. Depth is scored in the unit the checkpoint
was trained on (``data.depth_target``: metres, disparity pixels or 1/m; the JSON's ``depth.target`` and
``depth.unit`` say which), or in metres with ``--depth-metres``.
"""

from __future__ import annotations

import argparse

from padnet_dist.config.cli_args import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="URL",
        help="a step-... checkpoint, or a phase/run dir (newest committed)",
    )
    parser.add_argument(
        "--split-manifest", default="", metavar="URL", help="evaluate this split instead of data.val_manifest"
    )
    parser.add_argument(
        "--depth-cap-m",
        type=float,
        default=None,
        metavar="M",
        help="score depth only where ground truth < M metres (default: 10 for nyud, none otherwise; 0 = none)",
    )
    parser.add_argument(
        "--depth-metres",
        action="store_true",
        help="score depth in metres, converting a disparity or inverse-depth model's output with each sample's camera",
    )
    parser.add_argument("--nproc", type=int, default=0, metavar="N", help="start N local ranks (CPU: gloo)")


def _rank_command(args: argparse.Namespace) -> list[str]:
    argv = ["eval", "--checkpoint", args.checkpoint]
    for path in args.config:
        argv += ["--config", path]
    if args.split_manifest:
        argv += ["--split-manifest", args.split_manifest]
    if args.depth_cap_m is not None:
        argv += ["--depth-cap-m", repr(args.depth_cap_m)]
    if args.depth_metres:
        argv += ["--depth-metres"]
    return argv + list(args.overrides)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)  # validate before starting any rank
    if args.nproc:
        from padnet_dist.launch.local import cli_rank_argv, run_local_ranks

        return run_local_ranks(args.nproc, cli_rank_argv(_rank_command(args)))

    from padnet_dist.eval.evaluate import evaluate_checkpoint
    from padnet_dist.eval.report import format_table
    from padnet_dist.launch.env import current_world

    metrics, url = evaluate_checkpoint(
        args.checkpoint,
        current_world(),
        storage_cfg=cfg.storage,
        config_files=args.config,
        overrides=args.overrides,
        split_manifest=args.split_manifest,
        depth_cap_m=args.depth_cap_m,
        depth_in_metres=args.depth_metres,
    )
    if url is not None:
        print(format_table(metrics))
        print(f"wrote {url}")
    return 0
