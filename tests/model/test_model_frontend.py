"""The front end's declared features contract (channels, strides) holds for every ResNet depth."""

from __future__ import annotations

import pytest
import torch
import torchvision

from padnet_dist.model.frontend import FrontEnd

SIZE = 64  # a multiple of 32, so every stage is exactly SIZE // stride


@pytest.mark.parametrize("backbone", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
def test_declared_channels_and_strides_match_real_outputs(backbone: str) -> None:
    frontend = FrontEnd(backbone, output_stride=8, aggregation_channels=8).eval()
    rgb = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        stages = frontend.forward_features(rgb)
        out = frontend(rgb)
    assert [info.name for info in frontend.feature_info] == list(stages)
    for info in frontend.feature_info:
        assert tuple(stages[info.name].shape) == (1, info.channels, SIZE // info.stride, SIZE // info.stride)
    assert tuple(out.shape) == (1, frontend.out_channels, SIZE // frontend.out_stride, SIZE // frontend.out_stride)
    assert frontend.out_stride == 8


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_output_stride_is_respected(output_stride: int) -> None:
    frontend = FrontEnd("resnet18", output_stride=output_stride, aggregation_channels=4)
    out = frontend(torch.randn(2, 3, SIZE, SIZE))
    assert frontend.out_stride == output_stride
    assert tuple(out.shape) == (2, 3 * 4 + 512, SIZE // output_stride, SIZE // output_stride)


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_dilation_computes_the_original_network_on_a_finer_grid(backbone: str, output_stride: int) -> None:
    """Removing a stride and dilating every later 3x3 conv must reproduce the undilated ResNet at the
    positions it sampled: dilated[::r, ::r] == original, for the same weights (eval-mode BN)."""
    original = getattr(torchvision.models, backbone)(weights=None).eval()
    frontend = FrontEnd(backbone, output_stride=output_stride, aggregation_channels=4).eval()
    frontend.load_backbone_state_dict(original.state_dict())
    rgb = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        dilated = frontend.forward_features(rgb)
        x = original.maxpool(original.relu(original.bn1(original.conv1(rgb))))
        for info in frontend.feature_info:
            x = getattr(original, info.name)(x)
            ratio = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}[info.name] // info.stride
            torch.testing.assert_close(dilated[info.name][..., ::ratio, ::ratio], x, rtol=1e-4, atol=1e-4)
