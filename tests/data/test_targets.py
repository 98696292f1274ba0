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
