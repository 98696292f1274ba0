"""``padnet-dist model``: describe the configured variant: parameters, GFLOPs and output shapes.

GFLOPs count one forward pass of batch 1 at ``data.crop_height x data.crop_width`` with
``torch.utils.flop_counter.FlopCounterMode``: 2 FLOPs per multiply-accumulate of convolutions and matrix
products; BatchNorm, activations and interpolation are not counted. The model is built and run on the
``meta`` device (shapes only), so this is instant even for ResNet-101 at full size, and no weights are loaded.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from padnet_dist.config.cli_args import add_config_arguments, config_from_args
from padnet_dist.config.model import ModelConfig
from padnet_dist.model import build_model


@dataclass(frozen=True)
class ModelCost:
    variant: str
    params: int
    gflops: float
    outputs: dict[str, list[int]]


def measure_model(model_cfg: ModelConfig, height: int, width: int) -> ModelCost:
    """Parameters, GFLOPs (2 x MACs, batch 1) and output shapes of ``model_cfg`` at ``height x width``."""
    with torch.device("meta"):
        model = build_model(model_cfg)
        rgb = torch.empty(1, 3, height, width)
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        outputs = model(rgb)
    return ModelCost(
        variant=model.describe(),
        params=sum(p.numel() for p in model.parameters()),
        gflops=counter.get_total_flops() / 1e9,
        outputs={name: list(t.shape) for name, t in outputs.items()},
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object: variant, params, gflops, outputs")


def run(args: argparse.Namespace) -> int:
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
