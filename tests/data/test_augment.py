"""Augmentation geometry: one transform for every map, intrinsics that follow it, derived targets consistent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from padnet_dist.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentParams,
    augment_sample,
    draw_params,
    prepare_eval_sample,
    sample_rng,
)
from padnet_dist.data.targets import normals_from_depth

H, W = 24, 32
CAMERA = {"fx": 30.0, "fy": 28.0, "cx": 15.0, "cy": 11.5}


def _plane_sample(seed: int = 0) -> dict:
    """A tilted plane: inverse depth is linear in the pixel coordinates, so its normal is one constant vector."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    depth = (1.0 / (0.2 + 0.004 * u + 0.002 * v)).astype(np.float32)
    rng = np.random.default_rng(seed)
    semantic = rng.choice(np.array([1, 4, 6, 255], dtype=np.uint8), size=(H // 4, W // 4)).repeat(4, 0).repeat(4, 1)
    return {
        "key": "k",
        "rgb": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
        "semantic": semantic,
        "depth": depth,
        "instances": np.where(semantic == 255, 0, semantic.astype(np.int32) * 1000 + 7).astype(np.int32),
        "camera": dict(CAMERA),
    }


def _augment(sample, params, crop=(H, W), divide=True):
    return augment_sample(
        sample, params, crop_height=crop[0], crop_width=crop[1], divide_depth_by_scale=divide, ignore_index=255
    )


def _normals(out) -> torch.Tensor:
    cam = out["camera"]
    t = {k: torch.tensor([cam[k]], dtype=torch.float64) for k in cam}
    return normals_from_depth(out["depth"][None], t["fx"], t["fy"], t["cx"], t["cy"])[0]


def _plane_normal() -> torch.Tensor:
    n = _normals(prepare_eval_sample(_plane_sample()))
    return n[:, H // 2, W // 2]


def test_flip_mirrors_maps_and_negates_normal_x():
    sample = _plane_sample()
    plain = _augment(sample, AugmentParams(scale=1.0, top=0, left=0, flip=False))
    flipped = _augment(sample, AugmentParams(scale=1.0, top=0, left=0, flip=True))
    assert torch.equal(flipped["semantic"], plain["semantic"].flip(-1))
    assert torch.allclose(flipped["depth"], plain["depth"].flip(-1))
    assert flipped["camera"]["cx"] == pytest.approx(W - 1 - CAMERA["cx"])
    n, nf = _normals(plain), _normals(flipped).flip(-1)
    interior = (n.norm(dim=0) > 0) & (nf.norm(dim=0) > 0)
    assert interior.sum() > 0.8 * (H - 2) * (W - 2)
    assert torch.allclose(nf[0][interior], -n[0][interior], atol=1e-4)
    assert torch.allclose(nf[1:][:, interior], n[1:][:, interior], atol=1e-4)


@pytest.mark.parametrize("scale", [0.75, 1.5, 1.75])
def test_nearest_labels_keep_only_existing_values(scale):
    sample = _plane_sample(seed=3)
    out = _augment(sample, AugmentParams(scale=scale, top=2, left=-3, flip=True), crop=(20, 26))
    assert set(out["semantic"].unique().tolist()) <= set(np.unique(sample["semantic"]).tolist()) | {255}
    assert set(out["instances"].unique().tolist()) <= set(np.unique(sample["instances"]).tolist()) | {-1}


@pytest.mark.parametrize("scale", [0.5, 1.25, 2.0])
def test_depth_divided_by_scale_and_holes_never_blend(scale):
    sample = _plane_sample()
    sample["depth"] = np.full((H, W), 4.0, np.float32)
    sample["depth"][2:6, 2:6] = 0.0
    out = _augment(sample, AugmentParams(scale=scale, top=0, left=0, flip=False), crop=(16, 16))
    values = out["depth"].unique()
    assert (out["depth"] > 0).any() and (out["depth"] == 0).any()
    assert torch.allclose(values[values > 0], torch.tensor(4.0 / scale))
    kept = _augment(sample, AugmentParams(scale=scale, top=0, left=0, flip=False), crop=(16, 16), divide=False)
    # grid_sample's float32 weights w and 1 - w sum to 1 only within a few ulps, so an interpolation of 4.0
    # with 4.0 may land 1-2 ulps off; a blend with a hole would be off by its weight, >= 0.1 at these scales.
    positive = kept["depth"][kept["depth"] > 0]
    assert ((kept["depth"] == 0) | ((kept["depth"] - 4.0).abs() <= 4 * 2.0**-22)).all() and positive.numel()


@pytest.mark.parametrize("flip", [False, True])
def test_depth_range_is_applied_as_holes_before_resampling(flip):
    # The loader hands augmentation the raw depth and the valid range: the result must be what zeroing the
    # out-of-range depth before augmentation gives, bitwise (out-of-range values never blend into valid ones).
    sample = _plane_sample()
    sample["depth"][5:9, 10:20] = 0.5  # too near
    sample["depth"][14:18, 3:12] = 90.0  # too far
    sample["depth"][1, 1] = np.nan
    params = AugmentParams(scale=1.25, top=3, left=-2, flip=flip)
    ranged = augment_sample(sample, params, crop_height=20, crop_width=26, divide_depth_by_scale=True,
                            ignore_index=255, min_depth_m=1.0, max_depth_m=50.0)  # fmt: skip
    zeroed = dict(sample, depth=np.where((sample["depth"] > 1.0) & (sample["depth"] < 50.0), sample["depth"], 0.0))
    expected = _augment(zeroed, params, crop=(20, 26))
    assert torch.equal(ranged["depth"], expected["depth"])
    assert (ranged["depth"] == 0).any() and (ranged["depth"] < 50.0 / 1.25).all()


def _bilinear_crop_reference(rgb: np.ndarray, params: AugmentParams, crop: tuple[int, int]) -> torch.Tensor:
    """The definition in float64: bilinear resize of the whole image (align_corners=False, border clamp), crop with
    0 outside the scaled image, flip, ImageNet normalisation."""
    height, width = rgb.shape[:2]
    scaled_h, scaled_w = round(height * params.scale), round(width * params.scale)

    def taps(out: np.ndarray, size: int, scaled: int):
        src = np.clip((out + 0.5) * size / scaled - 0.5, 0, size - 1)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, size - 1), src - lo

    rows = np.arange(crop[0]) + params.top
    cols = np.arange(crop[1])[::-1] if params.flip else np.arange(crop[1])
    cols = cols + params.left
    (r0, r1, wr), (c0, c1, wc) = taps(rows, height, scaled_h), taps(cols, width, scaled_w)
    image = rgb.astype(np.float64)
    top = image[r0][:, c0] * (1 - wc[None, :, None]) + image[r0][:, c1] * wc[None, :, None]
    bottom = image[r1][:, c0] * (1 - wc[None, :, None]) + image[r1][:, c1] * wc[None, :, None]
    value = top * (1 - wr[:, None, None]) + bottom * wr[:, None, None]
    inside = ((rows >= 0) & (rows < scaled_h))[:, None] & ((cols >= 0) & (cols < scaled_w))[None, :]
    mean, std = np.array(IMAGENET_MEAN) * 255, np.array(IMAGENET_STD) * 255
    return torch.from_numpy(np.where(inside[..., None], (value - mean) / std, 0.0).transpose(2, 0, 1))


@pytest.mark.parametrize(
    "params",
    [AugmentParams(1.75, 9, 13, False), AugmentParams(0.5, -3, 2, True), AugmentParams(0.75, 1, -2, True),
     AugmentParams(1.3, 5, 11, False), AugmentParams(1.0, 2, 3, True), AugmentParams(2.0, 30, 40, False)],
)  # fmt: skip
def test_rgb_is_the_bilinear_crop_within_one_level(params):
    # rgb is resized by torch's uint8 kernel over the source window the crop reads: separable, each pass rounded to a
    # whole level (<= 0.5 each, fixed-point weights), so within one grey level of the float64 definition (plus the
    # float32 normalisation's rounding), on a random image (the steepest gradients), for scales whose grid repeats
    # every 2 or 4 pixels or only over the whole axis (1.3 on 24 rows), with flips and padding.
    sample = _plane_sample(seed=5)
    crop = (20, 26)
    got = _augment(sample, params, crop=crop)["rgb"].double()
    expected = _bilinear_crop_reference(sample["rgb"], params, crop)
    levels = (got - expected).abs() * torch.tensor(IMAGENET_STD, dtype=torch.float64).view(3, 1, 1) * 255
    assert levels.max() <= 1.0 + 1e-5
    assert (got[:, expected.abs().sum(0) == 0] == 0).all()


def test_crop_size_and_padding_outside_the_image():
    sample = _plane_sample()
    # scale 0.5 -> 12 x 16, smaller than the 20 x 20 crop: the image sits at (3, 2) inside the padded crop.
    out = _augment(sample, AugmentParams(scale=0.5, top=-3, left=-2, flip=False), crop=(20, 20))
    assert out["rgb"].shape == (3, 20, 20) and out["semantic"].shape == (20, 20) and out["depth"].shape == (1, 20, 20)
    assert out["instances"].shape == (20, 20)
    outside = torch.ones(20, 20, dtype=torch.bool)
    outside[3:15, 2:18] = False
    assert (out["semantic"][outside] == 255).all()
    assert (out["depth"][0][outside] == 0).all()
    assert (out["instances"][outside] == -1).all()
    assert (out["rgb"][:, outside] == 0).all()
    assert (out["depth"][0][~outside] > 0).all()


@pytest.mark.parametrize("params", [AugmentParams(1.5, 5, 7, False), AugmentParams(0.75, 1, 2, True)])
def test_intrinsics_follow_the_transform(params):
    """Scaling by s with depth divided by s shrinks the scene uniformly, so the plane's normal is unchanged
    (x negated on a flip): only true if fx, fy, cx, cy were updated consistently with the pixels."""
    expected = _plane_normal().clone()
    if params.flip:
        expected[0] = -expected[0]
    out = _augment(_plane_sample(), params, crop=(14, 18))
    n = _normals(out)
    ok = n.norm(dim=0) > 0
    assert ok.sum() > 50
    assert torch.allclose(n[:, ok], expected[:, None].expand(3, int(ok.sum())), atol=2e-2)


def test_params_are_deterministic_per_sample_and_epoch():
    kw = dict(scales=[0.5, 1.0, 1.75], crop_height=10, crop_width=10, flip_prob=0.5)
    draws = [draw_params(sample_rng(7, 2, p), H, W, **kw) for p in range(50)]
    assert draws == [draw_params(sample_rng(7, 2, p), H, W, **kw) for p in range(50)]
    assert draws != [draw_params(sample_rng(7, 3, p), H, W, **kw) for p in range(50)]
    assert {d.scale for d in draws} == {0.5, 1.0, 1.75} and {d.flip for d in draws} == {True, False}
    for d in draws:
        sh, sw = round(H * d.scale), round(W * d.scale)
        assert min(0, sh - 10) <= d.top <= max(0, sh - 10) and min(0, sw - 10) <= d.left <= max(0, sw - 10)


@pytest.mark.parametrize("divide", [True, False])
@pytest.mark.parametrize("scale", [0.75, 1.5])
def test_disparity_scales_with_the_image_whether_or_not_depth_is_divided(scale, divide):
    """Resizing by s scales disparity by s; the camera's baseline follows the depth convention so that
    baseline * fx / depth gives that disparity either way (divided depth: the rig shrinks with the scene)."""
    from padnet_dist.data.targets import depth_to_target

    sample = _plane_sample()
    sample["depth"] = np.full((H, W), 10.0, np.float32)
    sample["camera"] = dict(CAMERA, baseline=0.2)
    out = _augment(sample, AugmentParams(scale=scale, top=0, left=0, flip=False), crop=(8, 8), divide=divide)
    cam = out["camera"]
    disparity = depth_to_target(out["depth"][None], "disparity", baseline_m=cam["baseline"], fx=cam["fx"])
    source = 0.2 * CAMERA["fx"] / 10.0
    torch.testing.assert_close(disparity, torch.full_like(disparity, scale * source), rtol=1e-6, atol=0)
    assert out["depth"][0, 0, 0].item() == pytest.approx(10.0 / scale if divide else 10.0)
    assert prepare_eval_sample(sample)["camera"]["baseline"] == 0.2
