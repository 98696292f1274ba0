"""The front end of PAD-Net (paper §3.2): a dilated ResNet with multi-scale feature aggregation.

The maps of ``layer1``, ``layer2`` and ``layer3`` are each reduced to ``aggregation_channels`` by a
3x3 convolution (+BN+ReLU; stride 2 when the stage is at least twice as fine as the last one), brought to
the exact size of the ``layer4`` map by bilinear interpolation, and concatenated with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from padnet_dist.errors import UserError

# torchvision constructor and whether its blocks are Bottlenecks (4x channel expansion)
RESNETS: dict[str, tuple[object, bool]] = {
    "resnet18": (torchvision.models.resnet18, False),
    "resnet34": (torchvision.models.resnet34, False),
    "resnet50": (torchvision.models.resnet50, True),
    "resnet101": (torchvision.models.resnet101, True),
    "resnet152": (torchvision.models.resnet152, True),
}
STAGES = ("layer1", "layer2", "layer3", "layer4")


@dataclass(frozen=True)
class FeatureInfo:
    """One backbone stage: its name, channel count and stride relative to the input."""

    name: str
    channels: int
    stride: int


def _dilate_layer(layer: nn.Sequential, previous_dilation: int, dilation: int) -> None:
    """Remove the stride-2 of ``layer`` and dilate every 3x3 convolution after it by ``dilation``.

    The conv that carried the stride keeps ``previous_dilation`` (it still reads the finer grid it always
    read); every later 3x3 conv now reads a grid twice as fine as before, so it gets the new dilation.
    Works for torchvision BasicBlock (stride on conv1) and Bottleneck (stride on conv2) alike.
    """
    for block in layer:
        for conv in (m for m in block.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)):
            if conv.stride == (2, 2):
                conv.stride = (1, 1)
                conv.dilation = (previous_dilation, previous_dilation)
                conv.padding = (previous_dilation, previous_dilation)
            else:
                conv.dilation = (dilation, dilation)
                conv.padding = (dilation, dilation)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)
        block.stride = 1


class ResNetTrunk(nn.Module):
    """A torchvision ResNet without ``avgpool``/``fc``; parameter names match torchvision's state dicts."""

    def __init__(self, depth_name: str, output_stride: int) -> None:
        super().__init__()
        if depth_name not in RESNETS:
            raise ValueError(f"backbone '{depth_name}' is not one of {', '.join(RESNETS)}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride={output_stride}: use 8, 16 or 32")
        constructor, bottleneck = RESNETS[depth_name]
        net = constructor(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = 4 if bottleneck else 1
        strides = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
        dilation = 1
        for name in ("layer3", "layer4"):
            if strides[name] > output_stride:
                _dilate_layer(getattr(self, name), dilation, dilation * 2)
                dilation *= 2
                strides[name] = output_stride
        self.feature_info = [FeatureInfo(name, 64 * 2**i * expansion, strides[name]) for i, name in enumerate(STAGES)]

    def forward(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        """``rgb (B, 3, H, W)`` -> ``{layer1..layer4: (B, C_s, ~H/s, ~W/s)}`` per ``feature_info``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(rgb))))
        features = {}
        for name in STAGES:
            x = getattr(self, name)(x)
            features[name] = x
        return features


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution (no bias) + BatchNorm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FrontEnd(nn.Module):
    """Dilated ResNet + multi-scale aggregation.

    ``forward(rgb (B, 3, H, W)) -> (B, out_channels, ~H/out_stride, ~W/out_stride)``, exactly the size of the
    ``layer4`` map. ``out_channels = 3 * aggregation_channels + channels(layer4)``.
    """

    def __init__(self, backbone: str, output_stride: int = 8, aggregation_channels: int = 256) -> None:
        super().__init__()
        self.backbone = ResNetTrunk(backbone, output_stride)
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
        """The backbone stages ``layer1..layer4`` as declared by ``feature_info``."""
        return self.backbone(rgb)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        stages = self.backbone(rgb)
        last = stages[STAGES[-1]]
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
        """Load a torchvision ImageNet-format ResNet state dict into the backbone (``fc.*`` is ignored).

        Keys and shapes must match exactly (a missing BatchNorm ``num_batches_tracked`` is tolerated: old
        torchvision files predate it); otherwise a one-line ``UserError`` lists the first offending keys.
        """
        given = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
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
                f"pass a torchvision ImageNet state dict of the same ResNet depth (model.backbone)"
            )
        self.backbone.load_state_dict(given, strict=False)
