"""ImageNet backbone weights: read from a local path, an ``s3://`` URL or a torchvision weight name.

The result is a torchvision-format state dict of the configured backbone: a ResNet (``conv1.weight``,
``layer1.0.conv1.weight``, ..., ``fc.*`` allowed and ignored) or AlexNet (``features.0.weight``, ...,
``classifier.*`` allowed and ignored), which ``FrontEnd.load_backbone_state_dict`` checks key by key.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from padnet_dist.errors import UserError

if TYPE_CHECKING:
    from padnet_dist.config.model import ModelConfig
    from padnet_dist.config.run import StorageConfig
    from padnet_dist.model.padnet import PADNet

# "IMAGENET1K_V2", "DEFAULT" or a qualified "ResNet101_Weights.IMAGENET1K_V2"
_WEIGHT_NAME = re.compile(r"^([A-Za-z0-9]+_Weights\.)?[A-Z][A-Z0-9_]*$")


def is_torchvision_weight_name(spec: str) -> bool:
    """True when ``spec`` reads as a torchvision weight enum name rather than a file."""
    return bool(_WEIGHT_NAME.match(spec)) and not Path(spec).exists()


def load_backbone_weights(
    spec: str, storage_cfg: StorageConfig | None = None, backbone: str | None = None
) -> dict[str, torch.Tensor]:
    """The state dict named by ``spec``: a local path / ``file://`` / ``s3://`` URL of a ``torch.save``d state
    dict, or a torchvision weight name (``IMAGENET1K_V1`` needs ``backbone``, e.g. ``resnet101`` or ``alexnet``;
    ``ResNet101_Weights.IMAGENET1K_V2`` does not). Downloading needs internet; every failure is a one-line
    ``UserError``.
    """
    if is_torchvision_weight_name(spec):
        return _torchvision_state_dict(spec, backbone)
    from padnet_dist.storage import storage_for  # storage stays out of import time of the model path

    data = storage_for(spec, storage_cfg).read_bytes(spec)
    try:
        state_dict = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as e:
        raise UserError(
            f"cannot read backbone weights {spec} ({type(e).__name__}): pass a torch.save'd state dict"
        ) from None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise UserError(
            f"backbone weights {spec} are not a state dict of tensors: save a torchvision model.state_dict()"
        )
    return state_dict


def _torchvision_state_dict(name: str, backbone: str | None) -> dict[str, torch.Tensor]:
    import torchvision

    try:
        if "." in name:
            weights = torchvision.models.get_weight(name)
        elif backbone is None:
            raise UserError(f"weight name {name} needs a backbone: write e.g. ResNet101_Weights.{name}")
        else:
            weights = torchvision.models.get_model_weights(backbone)[name]
    except (KeyError, ValueError, AttributeError):
        raise UserError(
            f"'{name}' is not a torchvision weight name{f' of {backbone}' if backbone else ''}: "
            "use e.g. IMAGENET1K_V1, IMAGENET1K_V2 or a path / s3:// URL"
        ) from None
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(
            f"cannot download torchvision weights {name} ({reason}): on a machine without internet, save "
            f"them elsewhere with torch.save(...) and set model.pretrained=/path/or/s3://url"
        ) from None


def build_model_from_config(model_cfg: ModelConfig, storage_cfg: StorageConfig | None = None) -> PADNet:
    """``build_model`` with the backbone weights of ``model_cfg.pretrained`` loaded ("" = random init)."""
    from padnet_dist.model import build_model

    state_dict = None
    if model_cfg.pretrained:
        state_dict = load_backbone_weights(model_cfg.pretrained, storage_cfg, backbone=model_cfg.backbone)
    return build_model(model_cfg, state_dict)
