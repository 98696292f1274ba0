"""The config arguments every command shares: ``--config FILE`` (repeatable) and ``key=value`` overrides."""

from __future__ import annotations

import argparse

from padnet_dist.config.load import load_config
from padnet_dist.config.schema import Config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML overrides, applied in order (e.g. --config configs/nyud.yaml --config configs/ablations/t1_c_de.yaml)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotlist overrides, e.g. model.distillation=B"
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)
