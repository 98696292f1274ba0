"""Synthetic scenes: deterministic, geometrically consistent (depth, normals, shading) and exercising masking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from padnet_dist.data.converters.synthetic import SyntheticScene, load_scene
from padnet_dist.data.synthetic_scene import (
    AMBIENT,
    DIFFUSE,
    GROUND,
    OBJECT_CLASSES,
    SYNTHETIC_CLASSES,
    SYNTHETIC_PALETTE,
    render_scene,
)


def _rays(scene, height: int, width: int) -> np.ndarray:
    cam = scene.camera
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.stack([(u - cam["cx"]) / cam["fx"], (v - cam["cy"]) / cam["fy"], np.ones_like(u)], axis=-1)


def _up_in_camera(scene) -> np.ndarray:
    """World up in the camera frame (x right, y down, z forward) for a camera pitched down by `pitch`."""
    pitch = math.radians(scene.meta["pitch_deg"])
    return np.array([0.0, -math.cos(pitch), -math.sin(pitch)])


def test_exactly_eight_classes():
    assert len(SYNTHETIC_CLASSES) == 8 == len(SYNTHETIC_PALETTE) == len(set(SYNTHETIC_PALETTE))


def test_deterministic_by_seed_and_index():
    a, b = render_scene(3, 7, 48, 96), render_scene(3, 7, 48, 96)
    for name in ("rgb", "semantic", "depth", "instances", "normals"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.camera == b.camera and a.meta == b.meta
    assert not np.array_equal(a.rgb, render_scene(3, 8, 48, 96).rgb)
    assert not np.array_equal(a.rgb, render_scene(4, 7, 48, 96).rgb)


@pytest.mark.parametrize("size", [(37, 53), (64, 64), (96, 40)])
def test_any_resolution(size):
    s = render_scene(0, 1, *size)
    assert s.rgb.shape == (*size, 3) and s.rgb.dtype == np.uint8
    assert s.semantic.shape == s.depth.shape == s.instances.shape == size
    assert s.depth.dtype == np.float32 and s.instances.dtype == np.int32


@pytest.mark.parametrize("kind", ["room", "street"])
def test_floor_depth_is_the_ray_plane_intersection(kind):
    height, width = 96, 160
    for index in range(3):
        s = render_scene(11, index, height, width, kind=kind)
        rays = _rays(s, height, width)
        floor = (s.semantic == GROUND) & (s.depth > 0)
        assert floor.sum() > 50
        up = _up_in_camera(s)
        expected = -s.meta["camera_height_m"] / (rays @ up)  # z-depth where the ray meets y_world = 0
        np.testing.assert_allclose(s.depth[floor], expected[floor], rtol=1e-4)
        np.testing.assert_allclose(s.normals[floor], np.broadcast_to(up, (floor.sum(), 3)), atol=1e-5)


def test_normals_agree_with_the_depth_map():
    """Normals from back-projected depth (what the training targets compute) match the true normals."""
    height, width = 128, 256
    cosines = []
    for index in range(4):
        s = render_scene(5, index, height, width)
        points = _rays(s, height, width) * s.depth[..., None]
        du = points[1:-1, 2:] - points[1:-1, :-2]
        dv = points[2:, 1:-1] - points[:-2, 1:-1]
        n = np.cross(du, dv)
        n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-12
        inst = s.instances
        same = np.ones((height - 2, width - 2), bool)
        for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
            same &= inst[dy : dy + height - 2, dx : dx + width - 2] == inst[1:-1, 1:-1]
            same &= s.depth[dy : dy + height - 2, dx : dx + width - 2] > 0
        same &= s.depth[1:-1, 1:-1] > 0
        true = s.normals[1:-1, 1:-1]
        cosines.append(np.abs((n * true).sum(-1))[same])
    cosines = np.concatenate(cosines)
    assert cosines.size > 10000
    assert np.median(cosines) > 0.999 and np.mean(cosines > 0.98) > 0.97


def test_shading_is_lambertian_in_the_true_normals():
    for index in range(3):
        s = render_scene(2, index, 64, 128)
        light = np.array(s.meta["light_dir_cam"])
        surface = np.linalg.norm(s.normals, axis=-1) > 0.5
        expected = AMBIENT + DIFFUSE * np.maximum(s.normals @ light, 0)
        np.testing.assert_allclose(s.shading[surface], expected[surface], atol=1e-5)
        # brighter where lit: on each object, the better-lit half is brighter in the image
        luminance = s.rgb.astype(np.float64).mean(-1)
        for k in np.unique(s.instances[s.instances >= 1000]):
            m = s.instances == k
            if m.sum() < 200 or np.ptp(s.shading[m]) < 0.2:
                continue
            lit = s.shading[m] > np.median(s.shading[m])
            assert luminance[m][lit].mean() > luminance[m][~lit].mean()


def test_labels_instances_and_masks():
    seen = set()
    for index in range(24):
        s = render_scene(1, index, 48, 96)
        labels = set(np.unique(s.semantic).tolist())
        seen |= labels - {255}
        assert labels <= set(range(8)) | {255}
        assert (s.semantic == 255).any() and (s.semantic != 255).mean() > 0.8  # a thin void region
        assert (s.depth[s.semantic == 255] == 0).all()
        assert ((s.depth == 0) & (s.semantic != 255)).any()  # sky, range limit or sensor holes
        assert (s.depth > 0).mean() > 0.5
        assert s.depth.max() <= s.meta["max_range_m"]
        norm = np.linalg.norm(s.normals, axis=-1)
        assert ((np.abs(norm - 1) < 1e-4) | (norm == 0)).all()
        assert (norm[s.depth > 0] > 0).all()  # every valid depth pixel has a true normal
        objects = np.isin(s.semantic, OBJECT_CLASSES)
        np.testing.assert_array_equal(s.instances[objects] // 1000, s.semantic[objects])
        stuff = ~objects
        np.testing.assert_array_equal(s.instances[stuff], s.semantic[stuff])
    assert seen == set(range(8))


def test_intrinsics_vary_slightly_per_scene():
    cams = [render_scene(0, i, 100, 200).camera for i in range(6)]
    fx = np.array([c["fx"] for c in cams])
    assert len(set(fx.tolist())) == 6 and np.ptp(fx) / fx.mean() < 0.3
    assert all(abs(c["cx"] - 99.5) < 5 and abs(c["cy"] - 49.5) < 3 for c in cams)


def test_converter_sample_matches_the_renderer():
    sample = load_scene(SyntheticScene(seed=9, index=3, height=40, width=80))
    scene = render_scene(9, 3, 40, 80)
    assert sample["key"] == "synth_9_0000003" and "." not in sample["key"]
    np.testing.assert_array_equal(sample["rgb"], scene.rgb)
    np.testing.assert_array_equal(sample["depth"], scene.depth)
    assert sample["camera"] == scene.camera and sample["meta"]["dataset"] == "synthetic"
