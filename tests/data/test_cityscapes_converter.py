"""Cityscapes converter: official layout and encodings in, train ids / metres / instance ids out, value by value."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from padnet_dist.cli import main
from padnet_dist.data.converters.cityscapes import list_frames, load_frame
from padnet_dist.errors import UserError
from tests.helpers.raw_datasets import (
    CITYSCAPES_EDGE_DISPARITIES,
    cityscapes_frame_path,
    make_cityscapes_root,
    png_bit_depth,
    read_back,
)


@pytest.fixture
def city_root(tmp_path):
    root = tmp_path / "cityscapes"
    truth = make_cityscapes_root(root, split="train", cities=("aachen", "bochum"), frames_per_city=2, size=(64, 128))
    return root, truth


def _check_sample(sample: dict, truth) -> None:
    np.testing.assert_array_equal(sample["rgb"], truth.rgb)
    np.testing.assert_array_equal(sample["semantic"], truth.semantic)
    np.testing.assert_allclose(sample["depth"], truth.depth_m, rtol=1e-6)
    np.testing.assert_array_equal(sample["depth"] == 0, truth.disparity <= 1)  # p = 0 and p = 1 are invalid
    np.testing.assert_array_equal(sample["instances"], truth.instances)
    assert sample["instances"].dtype == np.int32
    for name in ("fx", "fy", "cx", "cy", "baseline"):
        assert sample["camera"][name] == pytest.approx(truth.camera[name], rel=1e-12)


def test_fixture_uses_the_real_encodings(city_root):
    root, truth = city_root
    key = next(iter(truth))
    assert png_bit_depth(cityscapes_frame_path(root, "train", key, "gtFine", "gtFine_instanceIds.png")) == 16
    assert png_bit_depth(cityscapes_frame_path(root, "train", key, "disparity", "disparity.png")) == 16
    assert png_bit_depth(cityscapes_frame_path(root, "train", key, "gtFine", "gtFine_labelIds.png")) == 8
    with Image.open(cityscapes_frame_path(root, "train", key, "leftImg8bit", "leftImg8bit.png")) as img:
        assert img.mode == "RGB"
    with Image.open(cityscapes_frame_path(root, "train", key, "gtFine", "gtFine_instanceIds.png")) as img:
        assert img.mode in ("I;16", "I")


def test_every_frame_converts_value_by_value(city_root):
    root, truth = city_root
    frames = list_frames(root, "train")
    assert [f.stem for f in frames] == sorted(truth)
    for frame in frames:
        sample = load_frame(frame)
        assert sample["key"] == frame.stem and "." not in sample["key"]
        assert sample["meta"]["city"] == truth[frame.stem].city and sample["meta"]["split"] == "train"
        _check_sample(sample, truth[frame.stem])
    # each frame's own camera file: the two cities differ, so one shared camera would get depth wrong
    cameras = {truth[f.stem].city: load_frame(f)["camera"]["fx"] for f in frames}
    assert cameras["aachen"] != cameras["bochum"]


def test_disparity_edge_values_p_0_1_2_and_the_largest(city_root):
    """p = 0 (no match) and p = 1 (d = 0, infinitely far) are invalid; p = 2 is the farthest finite depth
    (baseline * fx * 256, about 120 km at 2048 px: kept in the shards, masked by data.max_depth_m when set);
    65535 the nearest. The shards keep every value within float32 rounding."""
    root, truth = city_root
    frame = list_frames(root, "train")[0]
    sample, cam = load_frame(frame), truth[frame.stem].camera
    assert truth[frame.stem].disparity[0, : len(CITYSCAPES_EDGE_DISPARITIES)].tolist() == list(
        CITYSCAPES_EDGE_DISPARITIES
    )
    bf = cam["baseline"] * cam["fx"]
    want = [0.0, 0.0, bf * 256, bf * 128, bf * 256 / 65534, bf * 256 / 4999]
    np.testing.assert_allclose(sample["depth"][0, : len(want)], want, rtol=1e-7)
    assert sample["depth"].max() == sample["depth"][0, 2]  # p = 2 is the farthest (here fx is for 128 px)
    assert sample["depth"][sample["depth"] > 0].min() == sample["depth"][0, 4]
    assert np.isfinite(sample["depth"]).all() and (sample["depth"] >= 0).all()


def test_license_plate_and_void_ids_are_ignored(city_root):
    root, truth = city_root
    t = next(iter(truth.values()))
    sample = load_frame(list_frames(root, "train")[0])
    assert (sample["semantic"][t.label_ids == 255] == 255).all()
    assert (sample["semantic"][t.label_ids < 7] == 255).all()
    assert (sample["semantic"][t.label_ids == 26] == 13).all()  # car


def test_shard_command_round_trip(tmp_path, capsys):
    root = tmp_path / "cityscapes"
    truth = make_cityscapes_root(root, split="val", cities=("frankfurt", "lindau"), frames_per_city=2, size=(40, 72))
    out = tmp_path / "shards"
    argv = ["shard", "cityscapes", "--root", str(root), "--split", "val", "--out", str(out), "--samples-per-shard", "3"]
    assert main([*argv, "--rgb-format", "png", "--no-progress"]) == 0  # lossless: compared value by value
    samples = read_back(str(out / "val.manifest.json"))
    assert sorted(samples) == sorted(truth)
    for key, sample in samples.items():
        _check_sample(sample, truth[key])
        assert sample["meta"]["dataset"] == "cityscapes"


def _run_expecting_error(capsys, root, out) -> str:
    argv = ["shard", "cityscapes", "--root", str(root), "--split", "train", "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("padnet-dist shard: error:")
    assert not (out / "train.manifest.json").exists()  # nothing published
    return err


@pytest.mark.parametrize(
    "kind,suffix", [("disparity", "disparity.png"), ("camera", "camera.json"), ("gtFine", "gtFine_instanceIds.png")]
)
def test_missing_file_is_one_line_naming_it(city_root, tmp_path, capsys, kind, suffix):
    root, truth = city_root
    key = sorted(truth)[1]
    missing = cityscapes_frame_path(root, "train", key, kind, suffix)
    missing.unlink()
    err = _run_expecting_error(capsys, root, tmp_path / "out")
    assert str(missing) in err and "unpack" in err
    assert not (tmp_path / "out").exists()  # checked before any shard is written


def test_size_mismatch_names_the_file(city_root, tmp_path, capsys):
    root, truth = city_root
    key = sorted(truth)[2]
    bad = cityscapes_frame_path(root, "train", key, "gtFine", "gtFine_labelIds.png")
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(bad)
    err = _run_expecting_error(capsys, root, tmp_path / "out")
    assert str(bad) in err and "64x32" in err


def test_unknown_label_id_names_the_file(city_root, tmp_path, capsys):
    root, truth = city_root
    key = sorted(truth)[0]
    bad = cityscapes_frame_path(root, "train", key, "gtFine", "gtFine_labelIds.png")
    labels = truth[key].label_ids.copy()
    labels[5, 5] = 40
    Image.fromarray(labels).save(bad)
    err = _run_expecting_error(capsys, root, tmp_path / "out")
    assert str(bad) in err and "label id 40" in err


def test_corrupt_png_and_camera_name_the_file(city_root, tmp_path, capsys):
    root, truth = city_root
    key = sorted(truth)[3]
    png = cityscapes_frame_path(root, "train", key, "disparity", "disparity.png")
    png.write_bytes(png.read_bytes()[:60])
    err = _run_expecting_error(capsys, root, tmp_path / "out")
    assert str(png) in err and "cannot read" in err

    make_cityscapes_root(root, split="train", cities=("aachen", "bochum"), frames_per_city=2, size=(64, 128))
    camera = cityscapes_frame_path(root, "train", key, "camera", "camera.json")
    camera.write_text('{"intrinsic": {"fx": 1.0}}')
    err = _run_expecting_error(capsys, root, tmp_path / "out2")
    assert str(camera) in err and "baseline" in err


def test_wrong_root_or_split(tmp_path):
    with pytest.raises(UserError, match="leftImg8bit"):
        list_frames(tmp_path, "train")
    with pytest.raises(UserError, match="test labels are not public"):
        list_frames(tmp_path, "test")
