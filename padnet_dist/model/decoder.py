"""Task decoders (paper §3.5) and the bridge that feeds them when there is no distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from padnet_dist.model.frontend import conv_bn_relu
from padnet_dist.model.heads import deconv_bn_relu


class Decoder(nn.Module):
    """Two deconvolutions (each 2x resolution, half the channels; +BN+ReLU), then a 3x3 score convolution.

    ``forward(features (B, C_in, h, w), size=(H, W)) -> (B, out_channels, H, W)``; with ``h = H//4`` the
    deconvolutions give ``4h``, and a bilinear interpolation fixes the last pixels when ``H`` is not a
    multiple of 4. Outputs are raw (depth in metres without activation, semantic logits).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid_channels, last_channels = max(1, in_channels // 2), max(1, in_channels // 4)
        self.up = nn.Sequential(deconv_bn_relu(in_channels, mid_channels), deconv_bn_relu(mid_channels, last_channels))
        self.score = nn.Conv2d(last_channels, out_channels, 3, padding=1)

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        out = self.score(self.up(features))
        if out.shape[-2:] != tuple(size):
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out


class Bridge(nn.Module):
    """Front-end features -> decoder input when no distillation feeds the decoder (baselines, MTDN-inp0).

    A 3x3 conv(+BN+ReLU) to ``out_channels`` at the front-end resolution, then bilinear interpolation to
    ``size`` (1/4 of the input), the resolution distilled features have in the full model.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.reduce = conv_bn_relu(in_channels, out_channels)

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        out = self.reduce(features)
        if out.shape[-2:] != tuple(size):
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out
