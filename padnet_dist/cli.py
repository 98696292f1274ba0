"""The ``padnet-dist`` command. Each subcommand lives in ``padnet_dist/commands/<name>.py``.

A command module exposes ``add_arguments(parser)`` and ``run(args) -> int``; it is imported only
when its subcommand is used, so ``padnet-dist model`` does not pay for Ray or DeepSpeed imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from padnet_dist.errors import UserError

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "model": ("padnet_dist.commands.model", "describe a model variant: parameters, GFLOPs, output shapes"),
    "shard": ("padnet_dist.commands.shard", "convert a dataset (cityscapes, nyud, synthetic) into WebDataset shards"),
    "shards": ("padnet_dist.commands.shards", "inspect shards: 'shards inspect MANIFEST_URL'"),
    "train": (
        "padnet_dist.commands.train",
        "train one phase on the ranks the launcher gives (or --nproc N local ranks)",
    ),
    "ray-train": (
        "padnet_dist.commands.ray_train",
        "train one phase with Ray Train on the Ray cluster this job runs on",
    ),
    "eval": ("padnet_dist.commands.eval", "evaluate a checkpoint and write metrics JSON beside it"),
    "predict": ("padnet_dist.commands.predict", "write depth and semantic predictions as images"),
    "eval-cityscapes": (
        "padnet_dist.commands.eval_cityscapes",
        "official Cityscapes pixel-level evaluation of a folder",
    ),
    "export": ("padnet_dist.commands.export", "export a checkpoint as a consolidated fp32 state dict"),
    "check-data": ("padnet_dist.commands.check_data", "check that a config's shards are readable and fit its model"),
    "pipeline": (
        "padnet_dist.commands.pipeline",
        "run both phases, their evaluations and the report as jobs on a backend (local, slurm, ray)",
    ),
    "sweep": (
        "padnet_dist.commands.sweep",
        "reproduce a paper table (1, 2, 6): a pipeline run per ablation row and seed, then the table",
    ),
    "status": ("padnet_dist.commands.status", "show the jobs of a pipeline run: state, ids, durations, metrics"),
    "report": ("padnet_dist.commands.report", "write a run's report.html and report.json (metrics, curves, panels)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="padnet-dist", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command '{argv[0]}': choose one of {', '.join(COMMANDS)}")
        parser.print_help()
        return 0
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    cmd_parser = argparse.ArgumentParser(prog=f"padnet-dist {name}", description=COMMANDS[name][1])
    module.add_arguments(cmd_parser)
    args = _parse(cmd_parser, argv[1:])
    try:
        return int(module.run(args) or 0)
    except UserError as e:
        print(f"padnet-dist {name}: error: {e}", file=sys.stderr)
        return 2


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Options and positionals (``key=value`` overrides) in any order, where the command's parser allows it.

    ``parse_args`` hands all positionals of one ``nargs="*"`` argument to the first run of them, so overrides after
    an option are rejected; ``parse_intermixed_args`` collects them all. It refuses parsers with subcommands
    (``shard DATASET``, ``shards inspect``), which take no overrides and keep ``parse_args``.
    """
    if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
        return parser.parse_args(argv)
    return parser.parse_intermixed_args(argv)


if __name__ == "__main__":
    sys.exit(main())
