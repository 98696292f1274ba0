"""The front end of PAD-Net (paper §3.2): a dilated backbone trunk with multi-scale feature aggregation.

Every stage of the trunk but the last (``layer1..layer3`` of a ResNet, ``conv1``/``conv2`` of AlexNet) is reduced
to ``aggregation_channels`` by a 3x3 convolution (+BN+ReLU; stride 2 when the stage is at least twice as fine as the
last one), brought to the exact size of the last stage's map by bilinear interpolation, and concatenated with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from padnet_dist.errors import UserError
from padnet_dist.model.alexnet import AlexNetTrunk
from padnet_dist.model.features import FeatureInfo
from padnet_dist.model.resnet import RESNETS, ResNetTrunk

# The backbone choice: name -> trunk constructor taking the output stride. Each trunk has ``feature_info``,
# ``ignored_prefixes`` (classifier keys of torchvision's ImageNet files) and ``display_name``. Its keys are
# ``padnet_dist.vocabulary.BACKBONES``, the names the config accepts.
BACKBONES: dict[str, Callable[[int], nn.Module]] = {
    **{name: partial(ResNetTrunk, name) for name in RESNETS},
    "alexnet": AlexNetTrunk,
}

__all__ = ["BACKBONES", "FeatureInfo", "FrontEnd", "conv_bn_relu"]


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution (no bias) + BatchNorm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FrontEnd(nn.Module):
    """Dilated backbone trunk + multi-scale aggregation.

    ``forward(rgb (B, 3, H, W)) -> (B, out_channels, ~H/out_stride, ~W/out_stride)``, exactly the size of the last
    stage's map. ``out_channels = (num_stages - 1) * aggregation_channels + channels(last stage)`` (ResNet: 3 reduced
    stages, AlexNet: 2).
    """

    def __init__(self, backbone: str, output_stride: int = 8, aggregation_channels: int = 256) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone '{backbone}' is not one of {', '.join(BACKBONES)}")
        self.backbone = BACKBONES[backbone](output_stride)
        self.backbone_name = backbone
        self.feature_info: list[FeatureInfo] = self.backbone.feature_info
        last = self.feature_info[-1]
        self.reducers = nn.ModuleDict(
            {
                info.name: conv_bn_relu(
                    info.channels, aggregation_channels, stride=2 if last.stride >= 2 * info.stride else 1
                )
                for info in self.feature_info[:-1]
            }
        )
        self.out_channels = len(self.reducers) * aggregation_channels + last.channels
        self.out_stride = last.stride

    def forward_features(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        """The backbone stages as declared by ``feature_info``."""
        return self.backbone(rgb)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        stages = self.backbone(rgb)
        last = stages[self.feature_info[-1].name]
        size = last.shape[-2:]
        maps = []
        for name, reducer in self.reducers.items():
            reduced = reducer(stages[name])
            if reduced.shape[-2:] != size:
                reduced = F.interpolate(reduced, size=size, mode="bilinear", align_corners=False)
            maps.append(reduced)
        maps.append(last)
        return torch.cat(maps, dim=1)

    def load_backbone_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load a torchvision ImageNet state dict of the same architecture into the trunk (its classifier,
        ``fc.*`` for a ResNet and ``classifier.*`` for AlexNet, is ignored).

        Keys and shapes must match exactly (a missing BatchNorm ``num_batches_tracked`` is tolerated: old
        torchvision files predate it); otherwise a one-line ``UserError`` lists the first offending keys.
        """
        ignored = tuple(self.backbone.ignored_prefixes)
        given = {k: v for k, v in state_dict.items() if not k.startswith(ignored)}
        expected = self.backbone.state_dict()
        missing = [k for k in expected if k not in given and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in given if k not in expected]
        mismatched = [
            f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}"
            for k, v in expected.items()
            if k in given and tuple(getattr(given[k], "shape", ())) != tuple(v.shape)
        ]
        if missing or unexpected or mismatched:
            parts = [
                f"{label} {len(keys)} [{', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}]"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
                if keys
            ]
            raise UserError(
                f"backbone weights do not fit {self.backbone_name}: {'; '.join(parts)}: "
                f"pass a torchvision ImageNet state dict of the same architecture (model.backbone)"
            )
        self.backbone.load_state_dict(given, strict=False)
