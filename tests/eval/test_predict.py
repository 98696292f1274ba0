"""Prediction images: colour maps, the 16-bit depth PNG, panels and the Cityscapes submission format."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from padnet_dist.data.cityscapes_labels import EVAL_LABEL_IDS, TRAIN_ID_TO_ID, TRAIN_PALETTE
from padnet_dist.errors import UserError
from padnet_dist.eval import predict as P


def _png(path) -> Image.Image:
    return Image.open(io.BytesIO(open(path, "rb").read()))


def test_viridis_ends_and_monotonic_lightness():
    rgb = P.viridis(np.linspace(0, 1, 101)).astype(float)
    assert tuple(rgb[0]) == (68, 1, 84) and tuple(rgb[-1]) == (253, 231, 37)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(luma) > 0), "a perceptual map must brighten monotonically"
    assert P.viridis(np.array([-1.0, np.nan, 2.0])).shape == (3, 3)


def test_colorize_depth_near_is_bright_and_invalid_black():
    depth = np.array([[1.0, 5.0], [10.0, 0.0]], dtype=np.float32)
    rgb = P.colorize_depth(depth)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert tuple(rgb[1, 1]) == (0, 0, 0)
    assert rgb[0, 0].astype(int).sum() > rgb[0, 1].astype(int).sum() > rgb[1, 0].astype(int).sum()


def test_depth_png16_round_trip_within_quantisation():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.01, 250.0, size=(17, 23)).astype(np.float32)
    depth[0, :5] = 0.0
    data = P.encode_depth_png16(depth)
    image = Image.open(io.BytesIO(data))
    assert image.mode == "I;16" and np.asarray(image).dtype == np.uint16
    back = P.decode_depth_png16(data)
    assert back.shape == depth.shape
    assert np.all(back[0, :5] == 0)
    assert np.max(np.abs(back[depth > 0] - depth[depth > 0])) <= 1 / 256
    # deeper than the range saturates instead of wrapping; tiny valid depths stay valid
    edge = P.decode_depth_png16(P.encode_depth_png16(np.array([[300.0, 1e-4]])))
    assert edge[0, 0] == pytest.approx(65535 / 256) and edge[0, 1] > 0


def test_semantic_colours_follow_palette_and_ignore_is_black():
    ids = np.array([[0, 1], [18, 255]])
    rgb = P.colorize_semantic(ids, TRAIN_PALETTE)
    assert tuple(rgb[0, 0]) == TRAIN_PALETTE[0] and tuple(rgb[1, 0]) == TRAIN_PALETTE[18]
    assert tuple(rgb[1, 1]) == (0, 0, 0)
    pal = P.synthetic_palette(8)
    assert pal.shape == (8, 3) and len({tuple(c) for c in pal}) == 8


def test_write_panels_files_sizes_and_dtypes(tmp_path):
    h, w = 12, 20
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    ids = np.arange(h * w).reshape(h, w) % 8
    depth = np.linspace(0.5, 9.0, h * w, dtype=np.float32).reshape(h, w)
    urls = P.write_panels(str(tmp_path), "img_0", rgb, ids, depth, palette=P.synthetic_palette(8))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["img_0_depth.png", "img_0_depth16.png", "img_0_panel.png", "img_0_semantic.png"]
    assert len(urls) == 4
    assert _png(tmp_path / "img_0_semantic.png").mode == "RGB" and _png(tmp_path / "img_0_semantic.png").size == (w, h)
    assert _png(tmp_path / "img_0_depth.png").size == (w, h)
    assert _png(tmp_path / "img_0_depth16.png").mode == "I;16"
    assert _png(tmp_path / "img_0_panel.png").size == (3 * w, h)
    # a depth-only model: no semantic file, a two-column panel
    P.write_panels(str(tmp_path / "d"), "x", rgb, None, depth, palette=P.synthetic_palette(8))
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["x_depth.png", "x_depth16.png", "x_panel.png"]
    assert _png(tmp_path / "d" / "x_panel.png").size == (2 * w, h)


def test_cityscapes_frame_name_from_keys_and_files():
    assert P.cityscapes_frame_name("frankfurt_000001_002646_leftImg8bit.png") == "frankfurt_000001_002646"
    assert P.cityscapes_frame_name("val/munster_000012_000019") == "munster_000012_000019"
    assert P.cityscapes_frame_name("/x/y/bad_homburg_000001_000019_leftImg8bit.jpg") == "bad_homburg_000001_000019"
    with pytest.raises(UserError, match="Cityscapes frame"):
        P.cityscapes_frame_name("img_0001.png")


def test_cityscapes_submission_png_holds_label_ids(tmp_path):
    ids = np.array([[0, 5, 18], [255, 13, 11]])
    url = P.write_cityscapes(str(tmp_path), "lindau_000000_000019_leftImg8bit.png", ids)
    assert url.endswith("lindau_000000_000019_pred.png")
    image = _png(tmp_path / "lindau_000000_000019_pred.png")
    assert image.mode == "L" and image.size == (3, 2)
    labels = np.asarray(image)
    assert labels[0, 0] == TRAIN_ID_TO_ID[0] == 7 and labels[0, 2] == 33 and labels[1, 1] == 26
    assert labels[1, 0] == 0  # ignore -> 'unlabeled', which the official evaluation ignores
    assert set(np.unique(labels)) <= set(EVAL_LABEL_IDS) | {0}
