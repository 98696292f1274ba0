"""Normals from depth and contours from labels, checked on analytic geometry and exact pixel sets."""

import math

import pytest
import torch

from padnet_dist.data.targets import contours_from_labels, depth_to_target, normals_from_depth, target_to_depth

H, W = 24, 32
FX, FY, CX, CY = 40.0, 42.0, 15.5, 11.5


def camera(batch: int = 1) -> tuple[torch.Tensor, ...]:
    return tuple(torch.full((batch,), v, dtype=torch.float64) for v in (FX, FY, CX, CY))


def render_plane(normal: tuple[float, float, float], offset_m: float, fx=FX, fy=FY, cx=CX, cy=CY) -> torch.Tensor:
    """Depth (1, 1, H, W) of the plane n . P = -offset_m (n unit, facing the camera) seen through a pinhole."""
    n = torch.tensor(normal, dtype=torch.float64)
    n = n / n.norm()
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    rays = torch.stack([(u - cx) / fx, (v - cy) / fy, torch.ones_like(u)])
    z = -offset_m / (n.view(3, 1, 1) * rays).sum(0)
    assert (z > 0).all()
    return z.view(1, 1, H, W).to(torch.float32)


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.rad2deg(torch.acos((a * b).sum(0).clamp(-1, 1)))


@pytest.mark.parametrize("normal", [(0.0, 0.0, -1.0), (0.3, -0.4, -1.0), (-0.5, 0.2, -0.8), (0.0, -1.0, -0.5)])
def test_plane_gives_its_normal_everywhere_inside(normal):
    depth = render_plane(normal, offset_m=3.0)
    normals = normals_from_depth(depth, *camera(), max_relative_jump=0.5)
    expected = torch.tensor(normal, dtype=torch.float32)
    expected = (expected / expected.norm()).view(3, 1, 1)
    inner = normals[0, :, 1:-1, 1:-1]
    assert angle_deg(inner, expected).max() < 1.0
    assert torch.allclose(inner.norm(dim=0), torch.ones(H - 2, W - 2), atol=1e-5)
    # border pixels lack a neighbour: zero vector
    border = torch.ones(H, W, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    assert (normals[0][:, border] == 0).all()


def test_normals_face_the_camera_and_batch_uses_each_intrinsics():
    depth_a = render_plane((0.2, 0.1, -1.0), 2.0)
    depth_b = render_plane((0.2, 0.1, -1.0), 2.0, fx=60.0, fy=60.0, cx=10.0, cy=12.0)
    cam = (torch.tensor([FX, 60.0]), torch.tensor([FY, 60.0]), torch.tensor([CX, 10.0]), torch.tensor([CY, 12.0]))
    normals = normals_from_depth(torch.cat([depth_a, depth_b]), *cam, max_relative_jump=0.5)
    expected = torch.tensor([0.2, 0.1, -1.0])
    expected = (expected / expected.norm()).view(3, 1, 1)
    for i in range(2):
        assert angle_deg(normals[i, :, 1:-1, 1:-1], expected).max() < 1.0
    assert (normals[:, 2, 1:-1, 1:-1] < 0).all()  # z component toward the camera


def test_invalid_depth_zeroes_the_pixel_and_its_neighbours():
    depth = render_plane((0.0, 0.0, -1.0), 5.0)
    depth[0, 0, 10, 12] = 0.0
    depth[0, 0, 3, 20] = float("nan")
    normals = normals_from_depth(depth, *camera())
    zero = normals[0].abs().sum(0) == 0
    expected = torch.zeros(H, W, dtype=torch.bool)
    expected[0, :] = expected[-1, :] = expected[:, 0] = expected[:, -1] = True
    for v, u in ((10, 12), (3, 20)):
        for dv, du in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
            expected[v + dv, u + du] = True
    assert torch.equal(zero, expected)


def test_depth_step_gives_zero_normals_on_both_sides_only():
    depth = torch.full((1, 1, H, W), 4.0)
    depth[..., :, 16:] = 8.0  # a wall at 4 m, another at 8 m, step between columns 15 and 16
    normals = normals_from_depth(depth, *camera(), max_relative_jump=0.1)
    zero = normals[0].abs().sum(0) == 0
    expected = torch.zeros(H, W, dtype=torch.bool)
    expected[0, :] = expected[-1, :] = expected[:, 0] = expected[:, -1] = True
    expected[:, 15:17] = True
    assert torch.equal(zero, expected)
    assert torch.allclose(normals[0, :, 1:-1, 1:14], torch.tensor([0.0, 0.0, -1.0]).view(3, 1, 1))


def test_normals_are_deterministic_float32():
    depth = render_plane((0.3, -0.4, -1.0), 3.0) * (
        1 + 0.01 * torch.rand(1, 1, H, W, generator=torch.Generator().manual_seed(0))
    )
    a = normals_from_depth(depth, *camera())
    b = normals_from_depth(depth.clone(), *camera())
    assert a.dtype == torch.float32 and a.shape == (1, 3, H, W)
    assert torch.equal(a, b)


def two_regions(h: int = 6, w: int = 8, split_col: int = 4) -> torch.Tensor:
    sem = torch.zeros(1, h, w, dtype=torch.int64)
    sem[..., split_col:] = 3
    return sem


def test_two_regions_give_exactly_their_boundary():
    contour = contours_from_labels(two_regions())
    assert contour.shape == (1, 1, 6, 8) and contour.dtype == torch.float32
    expected = torch.zeros(6, 8)
    expected[:, 3:5] = 1.0  # one pixel each side of the boundary between columns 3 and 4
    assert torch.equal(contour[0, 0], expected)


def test_width_two_marks_two_pixels_each_side():
    contour = contours_from_labels(two_regions(), width=2)
    expected = torch.zeros(6, 8)
    expected[:, 2:6] = 1.0
    assert torch.equal(contour[0, 0], expected)


def test_diagonal_neighbours_count_at_a_corner():
    sem = torch.zeros(1, 5, 5, dtype=torch.int64)
    sem[0, 3:, 3:] = 1  # a 2x2 block in the bottom-right corner
    contour = contours_from_labels(sem)[0, 0]
    expected = torch.zeros(5, 5)
    expected[2:, 2:] = 1.0  # the block's pixels that see label 0 within one pixel, and the 8-connected ring
    expected[4, 4] = 0.0  # its 3x3 window holds label 1 only
    assert torch.equal(contour, expected)


def test_ignore_pixels_are_255_and_are_not_boundaries():
    sem = two_regions()
    sem[0, 0, :] = 255  # an ignore row at the top
    sem[0, 2:4, 0] = 255  # an ignore blob inside region 0, away from the class boundary
    contour = contours_from_labels(sem)[0, 0]
    expected = torch.zeros(6, 8)
    expected[1:, 3:5] = 1.0
    expected[0, :] = 255.0
    expected[2:4, 0] = 255.0
    assert torch.equal(contour, expected)


def test_contours_batched_match_single():
    gen = torch.Generator().manual_seed(1)
    sem = torch.randint(0, 4, (3, 7, 9), generator=gen)
    sem[sem == 3] = 255
    batched = contours_from_labels(sem, width=1)
    for i in range(3):
        assert torch.equal(batched[i], contours_from_labels(sem[i : i + 1])[0])
    # a brute-force check of the documented rule on random labels
    for b in range(3):
        for v in range(7):
            for u in range(9):
                label = int(sem[b, v, u])
                if label == 255:
                    assert batched[b, 0, v, u] == 255
                    continue
                window = sem[b, max(v - 1, 0) : v + 2, max(u - 1, 0) : u + 2]
                differs = ((window != 255) & (window != label)).any()
                assert batched[b, 0, v, u] == float(differs)


def test_plane_tilt_angle_is_exact():
    # 60 degrees between the plane and the image plane: a strongly slanted floor.
    tilt = math.radians(60)
    normal = (0.0, -math.sin(tilt), -math.cos(tilt))
    depth = render_plane(normal, offset_m=1.5)
    normals = normals_from_depth(depth, *camera(), max_relative_jump=1.0)
    expected = torch.tensor(normal, dtype=torch.float32).view(3, 1, 1)
    assert angle_deg(normals[0, :, 1:-1, 1:-1], expected).max() < 1.0


def test_depth_targets_round_trip_and_keep_invalid_zero():
    depth = torch.tensor([0.0, 0.5, 2.0, 120000.0, float("nan")]).view(1, 1, 1, 5)
    baseline, fx = torch.tensor([0.2]), torch.tensor([2000.0])
    disparity = depth_to_target(depth, "disparity", baseline_m=baseline, fx=fx)
    torch.testing.assert_close(disparity[0, 0, 0], torch.tensor([0.0, 800.0, 200.0, 400.0 / 120000.0, 0.0]))
    inverse = depth_to_target(depth, "inverse_depth")
    torch.testing.assert_close(inverse[0, 0, 0], torch.tensor([0.0, 2.0, 0.5, 1 / 120000.0, 0.0]))
    for kind, values in (("disparity", disparity), ("inverse_depth", inverse)):
        back = target_to_depth(values, kind, baseline_m=baseline, fx=fx)
        torch.testing.assert_close(back, torch.nan_to_num(depth), rtol=1e-6, atol=0)
    assert torch.equal(target_to_depth(torch.tensor([-1.0, 0.0]), "disparity", baseline_m=0.2, fx=10.0), torch.zeros(2))
    with pytest.raises(ValueError, match="baseline"):
        depth_to_target(depth, "disparity")


# -- targets on the intermediate heads' grid: equal to the objective's resize of the full-resolution maps --------
def _scene_depth(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Tilted planes at two distances (depth steps), smooth bumps (curvature), holes and a non-finite pixel."""
    g = torch.Generator().manual_seed(seed)
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                          indexing="ij")  # fmt: skip
    depth = []
    for _ in range(batch):
        a, b = torch.rand(2, generator=g) * 0.02
        z = 1.0 / (0.1 + a * u / width + b * v / height) + 0.3 * torch.sin(u / 3) * torch.cos(v / 4)
        z = torch.where(u > width * torch.rand(1, generator=g), z * 1.5, z)  # a depth step
        z = torch.where(torch.rand(height, width, generator=g) < 0.05, torch.zeros_like(z), z)  # holes
        depth.append(z)
    depth = torch.stack(depth).unsqueeze(1).to(torch.float32)
    depth[0, 0, height // 2, width // 3] = float("nan")
    return depth


@pytest.mark.parametrize("height,width", [(32, 48), (40, 40), (30, 45), (13, 22), (8, 4)])
def test_normals_at_the_heads_grid_equal_the_resized_full_resolution_normals(height, width):
    from padnet_dist.data.targets import intermediate_size, normals_at_size, resize_normals

    depth = _scene_depth(3, height, width, seed=height * width)
    cam = (torch.tensor([40.0, 35.0, 50.0], dtype=torch.float64), torch.tensor([42.0, 36.0, 48.0]).double(),
           torch.tensor([width / 2 - 0.5, width / 3, width / 2]).double(), torch.tensor([height / 2, 5.0, 7.5]).double())  # fmt: skip
    size = intermediate_size(height, width)
    reference = resize_normals(normals_from_depth(depth, *cam), size)  # what the objective makes of full-res normals
    got = normals_at_size(depth, *cam, size)
    assert got.shape == (3, 3, *size)
    assert torch.equal(got, reference)  # bitwise: the same pixels through the same operations
    valid = got.abs().sum(dim=1) > 0
    assert valid.any() and (~valid).any()


@pytest.mark.parametrize("width_px", [1, 2])
@pytest.mark.parametrize("height,width", [(32, 48), (30, 45), (9, 14)])
def test_contours_at_the_heads_grid_equal_the_resized_full_resolution_contours(height, width, width_px):
    from padnet_dist.data.targets import contours_at_size, intermediate_size, resize_contour

    g = torch.Generator().manual_seed(height + width)
    blocks = torch.randint(0, 6, (2, height // 3 + 1, width // 3 + 1), generator=g)
    semantic = blocks.repeat_interleave(3, 1).repeat_interleave(3, 2)[:, :height, :width]
    semantic = torch.where(semantic == 5, torch.full_like(semantic, 255), semantic)  # ignore regions
    semantic[1, :, : width // 2] = 255  # a half-ignored sample
    size = intermediate_size(height, width)
    for labels in (semantic, torch.where(semantic == 3, torch.full_like(semantic, 254), semantic)):
        reference = resize_contour(contours_from_labels(labels, 255, width_px), size)
        assert torch.equal(contours_at_size(labels, size, 255, width_px), reference)
        assert torch.equal(contours_at_size(labels.to(torch.uint8), size, 255, width_px), reference)
    # labels beyond 8 bits or another ignore index take the float path, with the same answer
    wide = torch.where(semantic == 255, torch.full_like(semantic, 999), semantic * 100)
    assert torch.equal(contours_at_size(wide, size, 999, width_px),
                       resize_contour(contours_from_labels(wide, 999, width_px), size))  # fmt: skip
    assert {1.0, 255.0} <= set(contours_at_size(semantic, size).unique().tolist()) <= {0.0, 1.0, 255.0}


def test_losses_are_the_same_from_targets_made_on_the_heads_grid():
    from padnet_dist.config.optim import LossConfig
    from padnet_dist.data.targets import contours_at_size, normals_at_size
    from padnet_dist.train.objective import compute_losses

    depth = _scene_depth(2, 32, 40, seed=1)
    semantic = torch.randint(0, 4, (2, 8, 10)).repeat_interleave(4, 1).repeat_interleave(4, 2)
    cam = camera(2)
    g = torch.Generator().manual_seed(0)
    outputs = {"inter_normals": torch.randn(2, 3, 8, 10, generator=g), "inter_contour": torch.randn(2, 1, 8, 10, generator=g)}  # fmt: skip
    full = {"normals": normals_from_depth(depth, *cam), "contour": contours_from_labels(semantic)}
    quarter = {"normals": normals_at_size(depth, *cam, (8, 10)), "contour": contours_at_size(semantic, (8, 10))}
    a = compute_losses(outputs, full, LossConfig(contour_pos_balance=True))
    b = compute_losses(outputs, quarter, LossConfig(contour_pos_balance=True))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_float32_normals_match_the_float64_cross_product_of_back_projected_points():
    # The reference: the definition evaluated in float64 (back-project, central differences, cross product, orient).
    # normals_from_depth evaluates a cancellation-free closed form in float32: each component is a few float32
    # roundings (relative 6e-8 each) of terms no larger than the norm, so a unit vector is within 1e-6 of it.
    from padnet_dist.data.targets import backproject

    depth = _scene_depth(2, 48, 64, seed=3) * 40.0  # up to ~400 m: distant points are where float32 would cancel
    cam = (torch.tensor([2200.0, 500.0]).double(), torch.tensor([2100.0, 520.0]).double(),
           torch.tensor([30.0, 10.0]).double(), torch.tensor([20.0, 40.0]).double())  # fmt: skip
    got = normals_from_depth(depth, *cam)
    points = backproject(torch.nan_to_num(depth.double()), *cam)
    down = points[..., 2:, 1:-1] - points[..., :-2, 1:-1]
    right = points[..., 1:-1, 2:] - points[..., 1:-1, :-2]
    n = torch.linalg.cross(down, right, dim=1)
    n = n / n.norm(dim=1, keepdim=True)
    n = torch.where((n * points[..., 1:-1, 1:-1]).sum(1, keepdim=True) > 0, -n, n)
    valid = got[..., 1:-1, 1:-1].abs().sum(1, keepdim=True) > 0
    assert valid.float().mean() > 0.5
    torch.testing.assert_close(got[..., 1:-1, 1:-1], torch.where(valid, n, 0.0).float(), rtol=0, atol=1e-6)
