"""``padnet-dist check-data``: the config's manifests are readable and their classes match the model."""

from __future__ import annotations

import argparse

from padnet_dist.config.cli_args import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from padnet_dist.data.check import check_data

    for line in check_data(config_from_args(args)):
        print(line, flush=True)
    print("data: ok")
    return 0
