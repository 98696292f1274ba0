"""Deep multi-task prediction (paper §3.3): one deconvolution + score convolution per intermediate task."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from padnet_dist.vocabulary import FINAL_TASKS

# Channels of each task's score map; semantic uses num_classes.
SCORE_CHANNELS = {"depth": 1, "normals": 3, "contour": 1}
MAIN_TASKS = FINAL_TASKS  # N feature channels; the auxiliary tasks get N/2


def score_channels(task: str, num_classes: int) -> int:
    """Channels of ``task``'s prediction: depth 1 (metres), normals 3, semantic ``num_classes`` logits, contour 1 logit."""
    return num_classes if task == "semantic" else SCORE_CHANNELS[task]


def task_feature_channels(task: str, width: int) -> int:
    """``width`` (N) for depth and semantic, N/2 for normals and contour (§3.3)."""
    return width if task in MAIN_TASKS else width // 2


def deconv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """Transposed 4x4 convolution with stride 2: exactly doubles height and width; + BN + ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def init_upsampling_deconv(deconv: nn.ConvTranspose2d, generator: torch.Generator | None = None) -> None:
    """A 2x deconvolution's init: bilinear upsampling followed by a random channel mixing (FCN's bilinear filler).

    ``weight[i, o] = M[i, o] * b`` with ``b`` the separable 4x4 bilinear kernel (taps 1/4, 3/4, 3/4, 1/4) and ``M``
    Kaiming-normal over the input channels for a ReLU layer (std sqrt(2 / C_in)), so a fresh layer is exactly a 1x1
    mixing of the bilinearly upsampled input away from the border, and keeps its variance through BN and ReLU. A
    Kaiming init of the whole 4x4 kernel instead starts each output pixel from an unrelated random filter of its 2x2
    input neighbourhood: the demo's decoders (two of them per task, from 1/4 to full resolution) then learnt the
    small classes slowly, the final scene parsing ending 0.16 mIoU below the 1/4-resolution intermediate head it is fed
    by (spheres 0.17 IoU against 0.77), and the front-end baseline's decoder no better (docs/model.md).
    ``generator``: where ``M`` is drawn from (torch's global generator when None).
    """
    in_channels, out_channels, kh, kw = deconv.weight.shape
    if deconv.stride != (2, 2) or (kh, kw) != (4, 4) or deconv.padding != (1, 1):
        raise ValueError(f"init_upsampling_deconv expects a 4x4, stride-2, padding-1 deconvolution, got {deconv}")
    dtype = deconv.weight.dtype
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25], dtype=dtype, device=deconv.weight.device)
    mixing = torch.randn(in_channels, out_channels, dtype=dtype, device=deconv.weight.device, generator=generator)
    mixing = mixing * (2.0 / in_channels) ** 0.5
    with torch.no_grad():
        deconv.weight.copy_(mixing[:, :, None, None] * torch.outer(taps, taps))
        if deconv.bias is not None:
            deconv.bias.zero_()


def init_score_conv(conv: nn.Conv2d, generator: torch.Generator | None = None) -> None:
    """A prediction layer's init: Kaiming-normal for a linear layer (fan_in, gain 1: std 1/sqrt(fan_in)), zero bias.

    A score conv is the network's linear output: with inputs of mean square q (post-BN ReLU features, q ~ 0.5) it
    starts with outputs of std sqrt(q) ~ 0.7, whatever its width. The ReLU-gain fan_out init of the hidden layers
    gives a 1-channel 3x3 score conv weights of std sqrt(2/9) = 0.47 (11x more at fan-in 576): depth spread by ~8 m,
    normals of length ~4, logits of std ~3, and first phase-2 gradients that dwarf scene parsing's (docs/model.md).
    Much smaller than gain 1 (e.g. std 1e-3) starves the layers below of gradient: phase 1's scene parsing then
    learnt to half the mIoU in the demo's 72 steps.
    """
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="linear", generator=generator)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class IntermediateHead(nn.Module):
    """One intermediate task: front-end features -> task features (2x resolution) -> score map at 1/4 input size.

    ``forward(features (B, C_in, h, w), size=(H//4, W//4)) -> (task_features (B, C_task, 2h, 2w),
    prediction (B, C_score, H//4, W//4))``. Predictions are raw: depth in metres without activation,
    normals un-normalised, semantic and contour as logits.
    """

    def __init__(self, in_channels: int, feature_channels: int, out_channels: int) -> None:
        super().__init__()
        self.features = deconv_bn_relu(in_channels, feature_channels)
        self.score = nn.Conv2d(feature_channels, out_channels, 3, padding=1)
        self.feature_channels = feature_channels
        self.out_channels = out_channels

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        task_features = self.features(features)
        prediction = self.score(task_features)
        if prediction.shape[-2:] != tuple(size):
            prediction = F.interpolate(prediction, size=size, mode="bilinear", align_corners=False)
        return task_features, prediction


class MultiTaskPrediction(nn.Module):
    """The intermediate heads of ``tasks`` (any of depth, normals, semantic, contour), each independent."""

    def __init__(self, in_channels: int, tasks: list[str], width: int, num_classes: int) -> None:
        super().__init__()
        self.heads = nn.ModuleDict(
            {
                task: IntermediateHead(
                    in_channels, task_feature_channels(task, width), score_channels(task, num_classes)
                )
                for task in tasks
            }
        )

    def forward(
        self, features: torch.Tensor, size: tuple[int, int], tasks: list[str]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{task: (task_features, prediction)}`` for the requested ``tasks`` only."""
        return {task: self.heads[task](features, size) for task in tasks}
