"""Metric accumulators: hand-computed values, conventions, and independence from how samples are split."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from padnet_dist.eval.metrics import ConfusionMetrics, ContourMetrics, DepthMetrics, NormalsMetrics


def test_depth_metrics_by_hand_with_invalid_pixels():
    gt = torch.tensor([[[[2.0, 0.0], [4.0, 1.0]]]])
    pred = torch.tensor([[[[2.5, 7.0], [4.0, 2.0]]]])  # the 7.0 sits on invalid ground truth
    m = DepthMetrics()
    m.update(pred, gt)
    r = m.compute()
    assert r["num_pixels"] == 3
    assert r["rel"] == pytest.approx((0.25 + 0.0 + 1.0) / 3)
    assert r["rms"] == pytest.approx(math.sqrt((0.25 + 0.0 + 1.0) / 3))
    assert r["log10"] == pytest.approx((math.log10(1.25) + 0.0 + math.log10(2.0)) / 3)
    # ratios 1.25, 1, 2: delta < 1.25 is strict, so 1.25 fails it
    assert r["delta1"] == pytest.approx(1 / 3)
    assert r["delta2"] == pytest.approx(2 / 3)
    assert r["delta3"] == pytest.approx(3 / 3 - 1 / 3)  # 2.0 is not < 1.953125


def test_depth_caps_crop_padding_and_clamped_predictions():
    gt = torch.tensor([[[[0.0005, 5.0, 12.0, 3.0]]]])
    pred = torch.tensor([[[[1.0, 0.0, 1.0, 3.0]]]])
    m = DepthMetrics(min_depth_m=1e-3, max_depth_m=10.0, pred_min_m=1e-3)
    m.update(pred, gt)
    r = m.compute()
    assert r["num_pixels"] == 2  # 0.0005 below the minimum, 12 above the cap
    assert r["rel"] == pytest.approx(((5.0 - 1e-3) / 5.0 + 0.0) / 2)  # the zero prediction is clamped to 1e-3
    assert math.isfinite(r["log10"])
    m.update(pred * 100, gt, valid=torch.tensor([False]))
    assert m.compute()["num_pixels"] == 2

    crop = DepthMetrics(eigen_crop=True)
    full = torch.ones(1, 1, 480, 640)
    crop.update(full * 2, full)
    assert crop.compute()["num_pixels"] == (471 - 45) * (601 - 41)


def test_empty_depth_is_nan_not_an_error():
    m = DepthMetrics()
    m.update(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    assert math.isnan(m.compute()["rel"])


def test_confusion_metrics_with_a_class_absent_from_ground_truth():
    gt = torch.tensor([[[0, 0, 1, 1], [0, 255, 255, 1]]])
    pred = torch.tensor([[[0, 2, 1, 1], [0, 0, 3, 2]]])
    m = ConfusionMetrics(num_classes=4)
    m.update(pred, gt)
    r = m.compute()
    # class 0: tp 2, fn 1 (pred 2), fp 0 -> 2/3; class 1: tp 2, fn 1, fp 0 -> 2/3;
    # class 2: no GT, predicted twice -> IoU 0 counts; class 3: predicted only on an ignore pixel -> NaN
    assert r["iou"][:3] == pytest.approx([2 / 3, 2 / 3, 0.0])
    assert math.isnan(r["iou"][3])
    assert r["miou"] == pytest.approx((2 / 3 + 2 / 3 + 0.0) / 3)
    assert r["mean_acc"] == pytest.approx((2 / 3 + 2 / 3) / 2)  # only classes with ground truth
    assert r["pixel_acc"] == pytest.approx(4 / 6)
    assert r["num_pixels"] == 6


def test_confusion_rejects_out_of_range_predictions():
    m = ConfusionMetrics(num_classes=3)
    with pytest.raises(ValueError, match="prediction"):
        m.update(torch.tensor([[[5]]]), torch.tensor([[[0]]]))


def test_normals_metrics_by_hand_and_median_against_numpy():
    gt = torch.zeros(1, 3, 1, 5)
    gt[0, 2] = 1.0
    gt[0, :, 0, 4] = 0.0  # invalid
    angles = [0.0, 10.0, 20.0, 45.0, 90.0]
    pred = torch.stack([torch.tensor([math.sin(math.radians(a)), 0.0, math.cos(math.radians(a))]) for a in angles], 1)
    m = NormalsMetrics()
    m.update(pred.view(1, 3, 1, 5) * 3.0, gt)  # predictions need not be unit length
    r = m.compute()
    assert r["num_pixels"] == 4
    assert r["mean"] == pytest.approx(sum(angles[:4]) / 4)
    assert r["median"] == pytest.approx(15.0, abs=0.01)
    assert r["pct_11_25"] == pytest.approx(2 / 4)
    assert r["pct_22_5"] == pytest.approx(3 / 4)
    assert r["pct_30"] == pytest.approx(3 / 4)

    gen = torch.Generator().manual_seed(0)
    gt = F.normalize(torch.randn(2, 3, 16, 16, generator=gen), dim=1)
    pred = F.normalize(gt + 0.4 * torch.randn(2, 3, 16, 16, generator=gen), dim=1)
    m = NormalsMetrics()
    m.update(pred, gt)
    exact = torch.rad2deg(torch.acos((pred.double() * gt.double()).sum(1).clamp(-1, 1))).numpy()
    assert m.compute()["median"] == pytest.approx(float(np.median(exact)), abs=0.01)


def test_contour_f_score_by_hand():
    target = torch.tensor([[[[1.0, 1.0, 0.0, 0.0, 255.0]]]])
    prob = torch.tensor([[[[0.9, 0.2, 0.7, 0.1, 0.99]]]])
    m = ContourMetrics()
    m.update(prob, target)
    r = m.compute()
    assert r["precision"] == pytest.approx(0.5)
    assert r["recall"] == pytest.approx(0.5)
    assert r["f_score"] == pytest.approx(0.5)


def random_batch(seed: int, n: int = 6, h: int = 12, w: int = 10) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    depth = torch.rand(n, 1, h, w, generator=gen) * 8
    depth[depth < 1] = 0.0
    semantic = torch.randint(0, 5, (n, h, w), generator=gen)
    semantic[torch.rand(n, h, w, generator=gen) < 0.1] = 255
    normals = F.normalize(torch.randn(n, 3, h, w, generator=gen), dim=1)
    normals[:, :, :2] = 0.0
    contour = (torch.rand(n, 1, h, w, generator=gen) < 0.2).float()
    contour[:, :, -1] = 255.0
    return {
        "depth": depth,
        "pred_depth": depth.clamp_min(0.5) * (1 + 0.3 * torch.randn(n, 1, h, w, generator=gen)),
        "semantic": semantic,
        "pred_semantic": torch.randint(0, 5, (n, h, w), generator=gen),
        "normals": normals,
        "pred_normals": torch.randn(n, 3, h, w, generator=gen),
        "contour": contour,
        "prob": torch.rand(n, 1, h, w, generator=gen),
    }


def make_metrics():
    return {
        "depth": DepthMetrics(max_depth_m=7.0),
        "semantic": ConfusionMetrics(num_classes=5),
        "normals": NormalsMetrics(),
        "contour": ContourMetrics(),
    }


def feed(metrics, data, index):
    metrics["depth"].update(data["pred_depth"][index], data["depth"][index])
    metrics["semantic"].update(data["pred_semantic"][index], data["semantic"][index])
    metrics["normals"].update(data["pred_normals"][index], data["normals"][index])
    metrics["contour"].update(data["prob"][index], data["contour"][index])


def assert_same(a: dict, b: dict) -> None:
    for key, value in a.items():
        if isinstance(value, list):
            assert value == pytest.approx(b[key], rel=1e-12, nan_ok=True), key
        else:
            assert value == pytest.approx(b[key], rel=1e-12, nan_ok=True), key


def test_summing_the_states_of_two_ranks_equals_one_process():
    data = random_batch(3)
    whole = make_metrics()
    feed(whole, data, slice(0, 6))
    rank0, rank1 = make_metrics(), make_metrics()
    feed(rank0, data, [4, 0, 2])  # an uneven, shuffled split
    feed(rank1, data, [5, 1])
    feed(rank1, data, [3])
    for name in whole:
        reduced = rank0[name].state() + rank1[name].state()  # what all_reduce(SUM) does
        fresh = make_metrics()[name]
        fresh.load_state(reduced)
        assert_same(whole[name].compute(), fresh.compute())
        rank0[name].merge(rank1[name])
        assert_same(whole[name].compute(), rank0[name].compute())


def test_padding_samples_are_not_counted():
    data = random_batch(4, n=3)
    with_padding, without = make_metrics(), make_metrics()
    valid = torch.tensor([True, False, True])
    with_padding["depth"].update(data["pred_depth"], data["depth"], valid=valid)
    with_padding["semantic"].update(data["pred_semantic"], data["semantic"], valid=valid)
    with_padding["normals"].update(data["pred_normals"], data["normals"], valid=valid)
    with_padding["contour"].update(data["prob"], data["contour"], valid=valid)
    feed(without, data, [0, 2])
    for name in without:
        assert_same(without[name].compute(), with_padding[name].compute())


def test_state_is_a_flat_float64_or_int64_tensor_and_load_state_checks_shape():
    for m in make_metrics().values():
        s = m.state()
        assert s.dim() == 1 and s.dtype in (torch.float64, torch.int64)
        with pytest.raises(ValueError):
            m.load_state(torch.zeros(s.numel() + 1, dtype=s.dtype))


@pytest.mark.parametrize("world_size", range(1, 9))
def test_simulated_worlds_of_1_to_8_ranks_and_any_batch_size_agree_to_1e_12(world_size):
    """The metric layer alone, given fixed per-sample predictions: splitting the split over ranks (the real
    round-robin and a contiguous assignment) and grouping each rank's samples into batches of any size changes
    the result only by float64 rounding, never by more than 1e-12 relative."""
    data = random_batch(11, n=13, h=24, w=32)
    data["pred_depth"][:, :, :3] = math.nan  # non-finite predictions where the ground truth is cropped away
    data["depth"][:, :, :3] = 0.0
    reference = make_metrics()
    for i in range(13):
        feed(reference, data, [i])
    want = {name: m.compute() for name, m in reference.items()}
    for assign in ("round_robin", "contiguous"):
        for batch_size in (1, 3, 5):
            if assign == "round_robin":
                shares = [list(range(r, 13, world_size)) for r in range(world_size)]
            else:
                bounds = np.linspace(0, 13, world_size + 1).round().astype(int)
                shares = [list(range(bounds[r], bounds[r + 1])) for r in range(world_size)]
            ranks = []
            for share in shares:
                rank = make_metrics()
                for start in range(0, len(share), batch_size):
                    feed(rank, data, share[start : start + batch_size])
                ranks.append(rank)
            for name in want:
                reduced = sum(rank[name].state() for rank in reversed(ranks))  # all_reduce may add in any order
                fresh = make_metrics()[name]
                fresh.load_state(reduced)
                assert_same(want[name], fresh.compute())
    # and the pooled depth errors equal a direct float64 computation over every valid pixel of the split
    gt, pred = data["depth"].double(), data["pred_depth"].double()
    valid = (gt > 0) & (gt < 7.0)
    d, t = pred[valid].clamp_min(1e-3).numpy(), gt[valid].numpy()
    assert want["depth"]["num_pixels"] == valid.sum().item()
    assert want["depth"]["rel"] == pytest.approx(math.fsum(np.abs(d - t) / t) / t.size, rel=1e-12)
    assert want["depth"]["rms"] == pytest.approx(math.sqrt(math.fsum((d - t) ** 2) / t.size), rel=1e-12)
