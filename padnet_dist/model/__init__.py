"""PAD-Net in pure torch: no ranks, devices, storage, DeepSpeed or Ray (see docs/model.md)."""

from padnet_dist.model.build import build_model
from padnet_dist.model.distillation import DISTILLATIONS
from padnet_dist.model.frontend import BACKBONES, FeatureInfo, FrontEnd
from padnet_dist.model.padnet import OUTPUT_NAMES, PADNet

__all__ = ["BACKBONES", "DISTILLATIONS", "OUTPUT_NAMES", "FeatureInfo", "FrontEnd", "PADNet", "build_model"]
