"""A fresh network predicts near a constant: the heads and decoders phase 2 starts untrained add no spread of their
own, so phase 2 does not begin with depth and normals losses (and gradients) many times those of a constant guess."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from padnet_dist.config.model import ModelConfig
from padnet_dist.model import build_model
from padnet_dist.model.heads import deconv_bn_relu, init_upsampling_deconv

TINY = dict(backbone="resnet18", width=32, distill_channels=8, aggregation_channels=8, num_classes=5)
# A score conv is variance-preserving (std 1/sqrt(fan_in)), so its outputs deviate from the bias by about its BN+ReLU
# inputs' root mean square (~0.7), plus a constant: the ReLU features' mean (~0.4) times the sum of the conv's weights
# (std 1 over draws), so a 1-channel output of one draw may sit ~1 unit off (0.5-1.04 measured here, the most after
# the smooth bilinear-initialised decoders). With the ReLU-gain fan_out init it replaces, the intermediate depth,
# normals, logits and contour of this model were 8.0, 1.8, 2.5 and 3.8 units off.
MAX_RMS = 1.5


def _rms(x: torch.Tensor) -> float:
    return float(x.detach().pow(2).mean().sqrt())


@pytest.mark.parametrize("variant", ["padnet", "frontend"])
def test_fresh_predictions_start_near_a_constant(variant: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY, variant=variant, depth_init=4.5)).train()
    out = model(torch.randn(2, 3, 64, 64))
    for name, pred in out.items():
        centre = 4.5 if name.endswith("_depth") else 0.0
        assert _rms(pred - centre) < MAX_RMS, f"{name} is {_rms(pred - centre):.2f} off {centre}"


def test_depth_starts_at_zero_by_default_as_in_the_paper() -> None:
    torch.manual_seed(0)
    out = build_model(ModelConfig(**TINY)).train()(torch.randn(2, 3, 64, 64))
    assert _rms(out["inter_depth"]) < MAX_RMS and _rms(out["final_depth"]) < MAX_RMS


def test_a_fresh_deconvolution_is_bilinear_upsampling_then_a_channel_mixing() -> None:
    """Away from the border (where the transposed conv lacks the outer taps) a fresh 2x deconvolution equals
    ``F.interpolate(bilinear)`` followed by a 1x1 mixing of the channels: the decoders start as smooth upsamplers."""
    torch.manual_seed(0)
    deconv = deconv_bn_relu(6, 4)[0].double()
    init_upsampling_deconv(deconv)
    mixing = deconv.weight[:, :, 1, 1] / 0.75**2  # (in, out): the centre tap is 3/4 x 3/4 of it
    x = torch.randn(2, 6, 8, 10, dtype=torch.float64)
    upsampled = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    expected = torch.einsum("bihw,io->bohw", upsampled, mixing)
    out = deconv(x)
    assert out.shape == expected.shape
    # float64 sums of 24 products of unit-scale numbers, in different orders: rounding far below 1e-12
    torch.testing.assert_close(out[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], rtol=0, atol=1e-12)
    # a constant input (per channel) stays constant in the interior: no checkerboard
    flat = deconv(torch.ones(1, 6, 5, 5, dtype=torch.float64))[..., 1:-1, 1:-1]
    torch.testing.assert_close(flat, flat[..., :1, :1].expand_as(flat), rtol=0, atol=1e-12)


@pytest.mark.parametrize("variant", ["padnet", "frontend"])
def test_every_deconvolution_of_a_fresh_model_starts_bilinear(variant: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY, variant=variant))
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])
    kernel = torch.outer(taps, taps)
    deconvs = [m for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert deconvs, "the heads and decoders upsample with deconvolutions"
    for deconv in deconvs:
        w = deconv.weight.detach()
        mixing = w[:, :, 1, 1] / kernel[1, 1]
        torch.testing.assert_close(w, mixing[:, :, None, None] * kernel)
        assert float(mixing.std()) > 0.5 * (2.0 / w.shape[0]) ** 0.5  # a Kaiming-scale mixing, not a near-zero one


def test_the_bilinear_init_refuses_a_deconvolution_it_does_not_describe() -> None:
    with pytest.raises(ValueError, match="4x4, stride-2"):
        init_upsampling_deconv(torch.nn.ConvTranspose2d(4, 4, 3, stride=1))
