"""The six-term objective: masking, ignore labels, padding samples, resolution handling and the weighted sum."""

import math

import pytest
import torch
import torch.nn.functional as F

from padnet_dist.config.optim import LossConfig
from padnet_dist.train.objective import compute_losses

B, C, H, W = 2, 4, 8, 8


def make_batch(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    semantic = torch.randint(0, C, (B, H, W), generator=gen)
    semantic[:, 0, :3] = 255
    depth = torch.rand(B, 1, H, W, generator=gen) * 5 + 0.5
    depth[:, :, 2, 2:5] = 0.0
    normals = F.normalize(torch.randn(B, 3, H, W, generator=gen), dim=1)
    normals[:, :, 5, :4] = 0.0
    contour = (torch.rand(B, 1, H, W, generator=gen) > 0.8).float()
    contour[:, :, 7, :] = 255.0
    return {
        "semantic": semantic,
        "depth": depth,
        "normals": normals,
        "contour": contour,
        "valid": torch.ones(B, dtype=torch.bool),
        "keys": [f"k{i}" for i in range(B)],
    }


def make_outputs(seed: int = 1, scale: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    h, w = H // scale, W // scale
    shapes = {
        "inter_depth": (B, 1, h, w),
        "inter_normals": (B, 3, h, w),
        "inter_semantic": (B, C, h, w),
        "inter_contour": (B, 1, h, w),
        "final_depth": (B, 1, H, W),
        "final_semantic": (B, C, H, W),
    }
    return {k: torch.randn(*s, generator=gen).requires_grad_(True) for k, s in shapes.items()}


def test_every_output_gets_a_scalar_and_total_is_the_weighted_sum():
    weights = LossConfig(
        inter_depth=0.5, inter_normals=0.8, inter_semantic=1.5, inter_contour=0.25, final_depth=2.0, final_semantic=3.0
    )
    losses = compute_losses(make_outputs(), make_batch(), weights)
    names = ["inter_depth", "inter_normals", "inter_semantic", "inter_contour", "final_depth", "final_semantic"]
    assert set(losses) == set(names) | {"total"}
    assert all(losses[n].dim() == 0 and torch.isfinite(losses[n]) for n in losses)
    expected = sum(getattr(weights, n) * losses[n].item() for n in names)
    assert losses["total"].item() == pytest.approx(expected, rel=1e-6)


def test_depth_loss_is_the_mean_squared_error_over_valid_pixels_by_hand():
    depth = torch.tensor([[[[1.0, 0.0], [2.0, 4.0]]]])
    pred = torch.tensor([[[[2.0, 9.0], [2.0, 1.0]]]], requires_grad=True)
    losses = compute_losses({"final_depth": pred}, {"depth": depth}, LossConfig())
    assert losses["final_depth"].item() == pytest.approx((1.0 + 0.0 + 9.0) / 3)
    losses["total"].backward()
    # d/dp mean((p - t)^2) = 2 (p - t) / 3 at valid pixels, exactly 0 at the invalid one
    assert torch.allclose(pred.grad, torch.tensor([[[[2 / 3, 0.0], [0.0, -2.0]]]]))
    assert pred.grad[0, 0, 0, 1].item() == 0.0


def test_invalid_depth_and_normals_get_exactly_zero_gradient():
    batch, outputs = make_batch(), make_outputs()
    losses = compute_losses({k: outputs[k] for k in ("final_depth", "inter_normals")}, batch, LossConfig())
    losses["total"].backward()
    assert (outputs["final_depth"].grad[:, :, 2, 2:5] == 0).all()
    assert (outputs["final_depth"].grad[:, :, 3] != 0).all()
    assert (outputs["inter_normals"].grad[:, :, 5, :4] == 0).all()
    assert (outputs["inter_normals"].grad[:, :, 6] != 0).all()


def test_normals_loss_by_hand():
    target = torch.zeros(1, 3, 1, 2)
    target[0, :, 0, 0] = torch.tensor([0.0, 0.0, -1.0])  # pixel 1 is the zero vector: invalid
    pred = torch.tensor([[[[1.0, 5.0]], [[0.0, 5.0]], [[0.0, 5.0]]]], requires_grad=True)
    loss = compute_losses({"inter_normals": pred}, {"normals": target}, LossConfig())["inter_normals"]
    assert loss.item() == pytest.approx(1.0 + 0.0 + 1.0)  # ||(1,0,0) - (0,0,-1)||^2 over one valid pixel


def test_ignored_labels_get_zero_gradient_and_loss_matches_cross_entropy():
    batch, outputs = make_batch(), make_outputs()
    logits = outputs["final_semantic"]
    loss = compute_losses({"final_semantic": logits}, batch, LossConfig())["final_semantic"]
    assert loss.item() == pytest.approx(F.cross_entropy(logits, batch["semantic"], ignore_index=255).item(), rel=1e-6)
    loss.backward()
    assert (logits.grad[:, :, 0, :3] == 0).all()
    assert (logits.grad[:, :, 1].abs().sum(1) > 0).all()


def test_contour_loss_by_hand_with_and_without_balancing():
    target = torch.tensor([[[[1.0, 0.0, 0.0, 255.0]]]])
    logits = torch.tensor([[[[0.0, 0.0, math.log(3.0), 7.0]]]], requires_grad=True)
    bce = [math.log(2.0), math.log(2.0), math.log(4.0)]  # -log(sigmoid(0)), -log(1 - sigmoid(0)), -log(1 - 3/4)
    plain = compute_losses({"inter_contour": logits}, {"contour": target}, LossConfig())  # the paper's default
    assert plain["inter_contour"].item() == pytest.approx(sum(bce) / 3)
    balanced = compute_losses({"inter_contour": logits}, {"contour": target}, LossConfig(contour_pos_balance=True))
    assert balanced["inter_contour"].item() == pytest.approx((2.0 * bce[0] + bce[1] + bce[2]) / 3)
    balanced["total"].backward()
    assert logits.grad[0, 0, 0, 3].item() == 0.0


def test_padding_samples_contribute_nothing():
    batch, outputs = make_batch(), make_outputs()
    padded = dict(batch, valid=torch.tensor([True, False]))
    losses = compute_losses(outputs, padded, LossConfig())
    single_batch = {k: (v[:1] if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    single_outputs = {k: v[:1].detach().requires_grad_(True) for k, v in outputs.items()}
    single = compute_losses(single_outputs, single_batch, LossConfig())
    # fp32 sums over a batch of 2 vs 1 sample (at most 2 * 8 * 8 pixels) differ by about n * 6e-8 <= 8e-6 relative
    for name in single:
        assert losses[name].item() == pytest.approx(single[name].item(), rel=1e-5), name
    losses["total"].backward()
    for name, out in outputs.items():
        assert (out.grad[1] == 0).all(), name


def test_batch_without_any_valid_pixel_gives_zero_with_a_graph():
    outputs = make_outputs()
    batch = make_batch()
    batch["valid"] = torch.zeros(B, dtype=torch.bool)
    losses = compute_losses(outputs, batch, LossConfig())
    for name, loss in losses.items():
        assert loss.item() == 0.0 and loss.requires_grad, name
    losses["total"].backward()
    assert all(torch.isfinite(o.grad).all() and (o.grad == 0).all() for o in outputs.values())


def test_phase_one_computes_only_inter_semantic_and_needs_only_labels():
    outputs = {"inter_semantic": make_outputs(scale=4)["inter_semantic"]}
    batch = {"semantic": make_batch()["semantic"], "valid": torch.ones(B, dtype=torch.bool)}
    losses = compute_losses(outputs, batch, LossConfig(inter_semantic=2.0))
    assert set(losses) == {"inter_semantic", "total"}
    assert losses["total"].item() == pytest.approx(2.0 * losses["inter_semantic"].item())


def test_quarter_resolution_targets_are_sampled_at_cell_centres():
    batch, outputs = make_batch(), make_outputs(scale=4)
    losses = compute_losses(outputs, batch, LossConfig())
    sem_small = batch["semantic"][:, 2::4, 2::4]  # the pixel nearest the centre 4i + 1.5 of each 4x4 cell
    expected = F.cross_entropy(outputs["inter_semantic"], sem_small, ignore_index=255)
    assert losses["inter_semantic"].item() == pytest.approx(expected.item(), rel=1e-6)
    # depth: the mean of the cell's central 2x2 pixels where all four are valid, else the pixel nearest the centre
    depth = batch["depth"]
    centre = torch.stack(
        [depth[..., 1::4, 1::4], depth[..., 1::4, 2::4], depth[..., 2::4, 1::4], depth[..., 2::4, 2::4]]
    )
    depth_small = torch.where((centre > 0).all(dim=0), centre.mean(dim=0), depth[..., 2::4, 2::4])
    valid = depth_small > 0
    assert not valid[:, :, 0, 0].any() and valid[:, :, 0, 1].all()  # the invalid pixel (2, 2) falls in cell (0, 0)
    expected_depth = ((outputs["inter_depth"] - depth_small)[valid] ** 2).mean()
    assert losses["inter_depth"].item() == pytest.approx(expected_depth.item(), rel=1e-6)


def test_quarter_resolution_targets_line_up_with_the_prediction_grid():
    """A 1/4-resolution prediction that the evaluation's bilinear upsampling (align_corners=False) turns into the
    exact full-resolution target has zero loss: the targets sit where the prediction pixels are."""
    height, width = 16, 24
    cols = torch.arange(width, dtype=torch.float32)
    depth = (2.0 + 0.25 * cols).expand(1, 1, height, width).clone()  # a ramp along x
    semantic = (cols >= 5).long().expand(1, height, width).clone()  # a boundary between columns 4 and 5
    pred_depth = (2.0 + 0.25 * (4 * torch.arange(width // 4) + 1.5)).expand(1, 1, height // 4, width // 4).clone()
    upsampled = F.interpolate(pred_depth, size=(height, width), mode="bilinear", align_corners=False)
    torch.testing.assert_close(upsampled[..., 2:-2], depth[..., 2:-2], rtol=0, atol=1e-6)  # the same ramp
    # cell 1 spans columns 4..7 around 5.5: class 1 at its centre (the old top-left sample, column 4, said 0)
    pred_semantic = torch.full((1, 2, height // 4, width // 4), -20.0)
    pred_semantic[:, 0, :, 0] = pred_semantic[:, 1, :, 1:] = 20.0
    outputs = {"inter_depth": pred_depth, "inter_semantic": pred_semantic}
    losses = compute_losses(outputs, {"depth": depth, "semantic": semantic}, LossConfig())
    assert losses["inter_depth"].item() == pytest.approx(0.0, abs=1e-10)
    assert losses["inter_semantic"].item() < 1e-8
    # normals averaged over the central pixels are unit vectors again
    normals = F.normalize(torch.stack([cols / width, torch.zeros(width), -torch.ones(width)]), dim=0)
    normals = normals.view(1, 3, 1, width).expand(1, 3, height, width)
    pred_normals = F.normalize(normals[..., 1::4, 1::4] + normals[..., 1::4, 2::4], dim=1)
    loss = compute_losses({"inter_normals": pred_normals}, {"normals": normals}, LossConfig())["inter_normals"]
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    shifted = compute_losses({"inter_depth": pred_depth - 0.25 * 1.5}, {"depth": depth}, LossConfig())
    assert shifted["inter_depth"].item() == pytest.approx((0.25 * 1.5) ** 2)  # top-left sampling is 1.5 px off


def test_thin_contours_survive_downsampling():
    contour = torch.zeros(1, 1, 8, 8)
    contour[0, 0, :, 5] = 1.0  # a one-pixel vertical boundary that nearest sampling at stride 4 would miss
    contour[0, 0, 4:, :4] = 255.0  # a fully ignored 4x4 cell
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    loss = compute_losses({"inter_contour": logits}, {"contour": contour}, LossConfig(contour_pos_balance=False))
    loss["total"].backward()
    grad = logits.grad[0, 0]
    assert grad[0, 1] < 0 and grad[1, 1] < 0  # cells holding the boundary are positives
    assert grad[0, 0] > 0  # a cell with no boundary is a negative
    assert grad[1, 0] == 0  # the all-ignore cell is ignored


def test_unknown_output_and_missing_target_fail_with_the_name():
    outputs = make_outputs()
    with pytest.raises(ValueError, match="final_normals"):
        compute_losses({"final_normals": outputs["inter_normals"]}, make_batch(), LossConfig())
    with pytest.raises(KeyError, match="depth"):
        compute_losses({"final_depth": outputs["final_depth"]}, {"semantic": make_batch()["semantic"]}, LossConfig())
