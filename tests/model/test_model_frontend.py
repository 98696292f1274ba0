"""The front end's declared features contract (channels, strides) holds for every backbone (ResNets, AlexNet)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from padnet_dist.config.model import BACKBONES as CONFIG_BACKBONES
from padnet_dist.model.frontend import BACKBONES, FrontEnd

SIZE = 64  # a multiple of 32, so every stage is exactly SIZE // stride


def test_every_backbone_the_config_accepts_is_built_and_vice_versa() -> None:
    assert set(CONFIG_BACKBONES) == set(BACKBONES)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
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


def test_alexnet_stages_and_aggregation() -> None:
    frontend = FrontEnd("alexnet", output_stride=8, aggregation_channels=8)
    assert [(i.name, i.channels, i.stride) for i in frontend.feature_info] == [
        ("conv1", 64, 4),
        ("conv2", 192, 8),
        ("conv5", 256, 8),
    ]
    assert frontend.out_channels == 2 * 8 + 256  # conv1 and conv2 reduced, conv5 kept
    assert FrontEnd("alexnet", output_stride=16).out_stride == 16
    with pytest.raises(ValueError, match="AlexNet supports 8 or 16"):
        FrontEnd("alexnet", output_stride=32)


def test_alexnet_dilation_computes_the_undilated_network_on_a_finer_grid() -> None:
    """Output stride 8 (pool2 unstrided, conv3-5 dilated by 2) equals output stride 16 at the positions the latter
    samples, for the same weights: the dilation adds resolution, not a different network."""
    os16 = FrontEnd("alexnet", output_stride=16, aggregation_channels=4).eval()
    os8 = FrontEnd("alexnet", output_stride=8, aggregation_channels=4).eval()
    os8.backbone.load_state_dict(os16.backbone.state_dict())
    rgb = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        fine, coarse = os8.forward_features(rgb), os16.forward_features(rgb)
    torch.testing.assert_close(fine["conv2"], coarse["conv2"])
    torch.testing.assert_close(fine["conv5"][..., ::2, ::2], coarse["conv5"], rtol=1e-4, atol=1e-4)


def test_alexnet_uses_torchvision_convolutions_unchanged() -> None:
    """Away from the borders, conv1 computes torchvision's conv1 (same weights and stride; only the padding, hence
    the border and the sampling phase, differ): on the input shifted by 3 pixels the windows coincide."""
    reference = torchvision.models.alexnet(weights=None).eval()
    frontend = FrontEnd("alexnet", output_stride=8).eval()
    frontend.load_backbone_state_dict(reference.state_dict())
    rgb = torch.randn(1, 3, SIZE + 3, SIZE + 3)
    with torch.no_grad():
        ours = frontend.backbone.features[0](rgb[..., 3:, 3:])  # pads 5: cell i reads from 4i - 5 + 3 of rgb
        theirs = reference.features[0](rgb)  # pads 2: cell i reads from 4i - 2 of rgb
    inner = slice(2, min(ours.shape[-1], theirs.shape[-1]) - 2)  # windows entirely inside both inputs
    torch.testing.assert_close(ours[..., inner, inner], theirs[..., inner, inner])
