"""Dilated torchvision ResNets (18..152) as front-end trunks (paper §3.2)."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from padnet_dist.model.features import FeatureInfo

# torchvision constructor and whether its blocks are Bottlenecks (4x channel expansion)
RESNETS: dict[str, tuple[object, bool]] = {
    "resnet18": (torchvision.models.resnet18, False),
    "resnet34": (torchvision.models.resnet34, False),
    "resnet50": (torchvision.models.resnet50, True),
    "resnet101": (torchvision.models.resnet101, True),
    "resnet152": (torchvision.models.resnet152, True),
}
STAGES = ("layer1", "layer2", "layer3", "layer4")


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
    """A torchvision ResNet without ``avgpool``/``fc``; parameter names match torchvision's state dicts.

    ``feature_info``: ``layer1..layer4`` at strides 4, 8, 16, 32, with ``layer3``/``layer4`` dilated instead
    of strided down to ``output_stride`` (8, 16 or 32).
    """

    ignored_prefixes = ("fc.",)  # the ImageNet classifier of torchvision's files

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
        self.display_name = f"ResNet-{depth_name.removeprefix('resnet')}"

    def forward(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        """``rgb (B, 3, H, W)`` -> ``{layer1..layer4: (B, C_s, ~H/s, ~W/s)}`` per ``feature_info``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(rgb))))
        features = {}
        for name in STAGES:
            x = getattr(self, name)(x)
            features[name] = x
        return features
