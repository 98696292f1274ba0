"""AlexNet as a front-end trunk: the backbone of the paper's NYUD-v2 diagnostics (Tables 1 and 2, §4.2).

Built from ``torchvision.models.alexnet`` (``features``, with the same module indices), so a torchvision ImageNet
state dict (``features.{0,3,6,8,10}.*``; ``classifier.*`` ignored) loads with strict key matching.

torchvision's AlexNet is the single-column variant (Krizhevsky 2014, "one weird trick"): conv1..conv5 have 64, 192,
384, 256, 256 channels, no local response normalisation, no grouped convolutions. The paper cites the 2012 network
and trained in Caffe, presumably with BVLC's reference model: 96, 256, 384, 384, 256 channels, LRN, two groups,
weights only as Caffe files. The torchvision variant is the one whose ImageNet weights load here (the same depth,
kernel sizes and strides). What differs from torchvision's network, and why:

- **Stages.** ``feature_info`` names the three places where AlexNet's resolution is final before the next
  pooling: ``conv1`` (64 channels, stride 4), ``conv2`` (192, stride 8) and ``conv5`` (256, after conv3-conv5,
  stride 16; 8 when dilated). ``pool5`` is dropped: it only subsamples for the fully connected classifier, which a
  dense predictor does not use (the paper's "last convolutional layer of the backbone" is conv5). The multi-scale
  aggregation of §3.2 therefore combines conv1 and conv2 with conv5 (two reduced maps instead of ResNet's three).
- **Output stride 8 (default) or 16.** 16 is the undilated network. 8 removes pool2's stride and dilates
  conv3, conv4 and conv5 by 2 (the strategy of §3.2 and of DeepLab's VGG): the network then computes exactly the
  undilated one on a twice finer grid (a test checks ``os8[::2, ::2] == os16``). 32 is not offered: the only
  stride-32 layer is the dropped pool5.
- **Padding.** conv1 pads 5 instead of 2 and the two max-pools pad 1 instead of 0, so every map is exactly
  ``ceil(H / stride)`` and cell ``i`` is centred on input pixel ``stride * i``, as in the ResNet trunk (torchvision's
  padding gives 15x15 instead of 16x16 after conv1 of a 64x64 input, and a grid offset by a few pixels).
  Weights are unaffected; only the border handling and the sampling phase differ from ImageNet training.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from padnet_dist.model.features import FeatureInfo

# index in torchvision's ``features`` of the ReLU that ends each stage -> stage name
_STAGE_ENDS = {1: "conv1", 4: "conv2", 11: "conv5"}
_CONV1, _POOL1, _POOL2, _DILATED_CONVS = 0, 2, 5, (6, 8, 10)


class AlexNetTrunk(nn.Module):
    """torchvision AlexNet ``features[0:12]`` (conv1..conv5 with their ReLUs and pool1/pool2); see the module doc.

    ``forward(rgb (B, 3, H, W)) -> {conv1: (B, 64, ceil(H/4), ..), conv2: (B, 192, ceil(H/8), ..),
    conv5: (B, 256, ceil(H/output_stride), ..)}``.
    """

    ignored_prefixes = ("classifier.",)  # the ImageNet classifier of torchvision's files
    display_name = "AlexNet"

    def __init__(self, output_stride: int = 8) -> None:
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride={output_stride}: AlexNet supports 8 or 16 (its stride-32 pool5 is unused)")
        features = torchvision.models.alexnet(weights=None).features
        self.features = features[: max(_STAGE_ENDS) + 1]  # keeps torchvision's indices, hence its state-dict keys
        self.features[_CONV1].padding = (5, 5)
        for index in (_POOL1, _POOL2):
            self.features[index].padding = 1
        if output_stride == 8:
            self.features[_POOL2].stride = 1
            for index in _DILATED_CONVS:
                self.features[index].dilation = (2, 2)
                self.features[index].padding = (2, 2)
        self.feature_info = [
            FeatureInfo("conv1", 64, 4),
            FeatureInfo("conv2", 192, 8),
            FeatureInfo("conv5", 256, output_stride),
        ]

    def forward(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        result = {}
        x = rgb
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in _STAGE_ENDS:
                result[_STAGE_ENDS[index]] = x
        return result
