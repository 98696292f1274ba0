"""The cost of a model variant: parameters, GFLOPs and output shapes, measured without weights or data.

GFLOPs count one forward pass of batch 1 at the given height x width with
``torch.utils.flop_counter.FlopCounterMode``: 2 FLOPs per multiply-accumulate of convolutions and matrix
products; BatchNorm, activations and interpolation are not counted. The model is built and run on the
``meta`` device (shapes only), so this is instant even for ResNet-101 at full size, and no weights are loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from padnet_dist.config.model import ModelConfig
from padnet_dist.model.build import build_model


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
