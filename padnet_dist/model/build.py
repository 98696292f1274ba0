"""The one place a ``ModelConfig`` becomes constructor arguments."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from padnet_dist.config.model import ModelConfig
from padnet_dist.model.padnet import PADNet


def build_model(model_cfg: ModelConfig, backbone_state_dict: Mapping[str, torch.Tensor] | None = None) -> PADNet:
    """The PAD-Net variant ``model_cfg`` describes, with ImageNet backbone weights loaded when given.

    ``backbone_state_dict`` is a torchvision ImageNet state dict of ``model_cfg.backbone`` (ResNet or AlexNet) (see ``padnet_dist.train.pretrained``); a mismatch raises
    ``UserError``. ``model_cfg.pretrained`` is not read here: loading files is the caller's business.
    """
    model = PADNet(
        backbone=model_cfg.backbone,
        output_stride=model_cfg.output_stride,
        aggregation_channels=model_cfg.aggregation_channels,
        width=model_cfg.width,
        distill_channels=model_cfg.distill_channels,
        num_classes=model_cfg.num_classes,
        variant=model_cfg.variant,
        distillation=model_cfg.distillation,
        final_tasks=list(model_cfg.final_tasks),
        intermediate_tasks=list(model_cfg.intermediate_tasks),
        distill_inputs=list(model_cfg.distill_inputs),
        supervise_intermediate=model_cfg.supervise_intermediate,
        depth_init=model_cfg.depth_init,
    )
    if backbone_state_dict is not None:
        model.frontend.load_backbone_state_dict(backbone_state_dict)
    return model
