"""``padnet-dist model``: describe the configured variant: parameters, GFLOPs and output shapes.

Measured at ``data.crop_height x data.crop_width`` by ``padnet_dist.model.cost.measure_model`` (its docstring says
what the GFLOPs count); no weights are loaded.
"""

from __future__ import annotations

import argparse
import json

from padnet_dist.config.cli_args import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object: variant, params, gflops, outputs")


def run(args: argparse.Namespace) -> int:
    from padnet_dist.model.cost import measure_model

    cfg = config_from_args(args)
    height, width = cfg.data.crop_height, cfg.data.crop_width
    cost = measure_model(cfg.model, height, width)
    if args.json:
        print(
            json.dumps({"variant": cost.variant, "params": cost.params, "gflops": cost.gflops, "outputs": cost.outputs})
        )
        return 0
    print(f"variant: {cost.variant}")
    print(f"params:  {cost.params:,} ({cost.params / 1e6:.2f} M)")
    print(f"gflops:  {cost.gflops:.2f} per forward of 1x3x{height}x{width} (FLOPs = 2 x multiply-accumulates)")
    print("outputs:")
    for name, shape in cost.outputs.items():
        print(f"  {name:<15} {tuple(shape)}")
    return 0
