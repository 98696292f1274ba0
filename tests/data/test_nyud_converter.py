"""NYUD-v2 converter: the v7.3 .mat, splits.mat and classMapping40.mat in, 40-class train ids and metres out."""

from __future__ import annotations


import numpy as np
import pytest
import scipy.io

from padnet_dist.cli import main
from padnet_dist.data.converters import nyud
from padnet_dist.errors import UserError
from tests.helpers.raw_datasets import make_nyud_files, read_back, write_nyud_labeled_mat


@pytest.fixture
def nyu(tmp_path):
    return make_nyud_files(tmp_path / "nyu", num_images=6, size=(24, 32))


def _options(truth, split: str, raw_depth: bool = False) -> nyud.NyudOptions:
    return nyud.NyudOptions(
        mat=str(truth.mat), splits=str(truth.splits), class_map=str(truth.class_map), split=split, raw_depth=raw_depth
    )


def test_fixture_is_matlab_73_and_v5_like_the_real_files(nyu):
    assert nyu.mat.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    with pytest.raises(NotImplementedError):  # scipy refuses v7.3, as with the real file
        scipy.io.loadmat(nyu.mat)
    splits = scipy.io.loadmat(nyu.splits)
    assert splits["trainNdxs"].dtype == np.uint16 and splits["trainNdxs"].shape == (len(nyu.train), 1)


@pytest.mark.parametrize("split", ["train", "test"])
def test_split_converts_value_by_value(nyu, split):
    conversion = nyud.plan(_options(nyu, split))
    expected = nyu.train if split == "train" else nyu.test
    assert [job.index for job in conversion.jobs] == expected
    for job in conversion.jobs:
        sample = conversion.load(job)
        i = job.index
        assert sample["key"] == f"nyud_{i:04d}"
        np.testing.assert_array_equal(sample["rgb"], nyu.rgb[i])
        np.testing.assert_array_equal(sample["depth"], nyu.depth_m[i])
        np.testing.assert_array_equal(sample["semantic"], nyu.semantic[i])
        assert sample["instances"] is None
    assert conversion.info.classes[0] == "wall" and len(conversion.info.classes) == 40


def test_label_extremes_map_through_class_map(nyu):
    conversion = nyud.plan(_options(nyu, "train"))
    sample = conversion.load(conversion.jobs[0])
    # fixture puts labels 0, 1 and 894 at row 0, columns 0..2
    assert sample["semantic"][0, 0] == 255
    assert sample["semantic"][0, 1] == nyu.map_class[0] - 1
    assert sample["semantic"][0, 2] == nyu.map_class[893] - 1
    assert sample["semantic"][sample["semantic"] != 255].max() <= 39


def test_raw_depth_keeps_holes_invalid(nyu):
    conversion = nyud.plan(_options(nyu, "test", raw_depth=True))
    sample = conversion.load(conversion.jobs[0])
    np.testing.assert_array_equal(sample["depth"], nyu.raw_depth_m[conversion.jobs[0].index])
    assert (sample["depth"] == 0).any() and sample["meta"]["depth"] == "raw"


def test_full_size_camera_is_the_toolbox_intrinsics_made_0_based(tmp_path):
    truth = make_nyud_files(tmp_path, num_images=2, size=(480, 640), train=(1,))
    conversion = nyud.plan(_options(truth, "test"))
    sample = conversion.load(conversion.jobs[0])
    assert sample["rgb"].shape == (480, 640, 3)
    np.testing.assert_array_equal(sample["rgb"], truth.rgb[2])
    assert sample["camera"] == pytest.approx({"fx": 518.8579, "fy": 519.4696, "cx": 324.5824, "cy": 252.7362})


def test_smaller_images_scale_the_camera(nyu):
    cam = nyud.plan(_options(nyu, "train")).load(nyud.NyudImage(str(nyu.mat), 1))["camera"]
    s = 32 / 640
    assert cam["fx"] == pytest.approx(518.8579 * s) and cam["cx"] == pytest.approx((324.5824 + 0.5) * s - 0.5)


def test_shard_command_with_workers(nyu, tmp_path):
    out = tmp_path / "shards"
    argv = ["shard", "nyud", "--mat", str(nyu.mat), "--splits", str(nyu.splits), "--class-map", str(nyu.class_map)]
    argv += ["--split", "train", "--out", str(out), "--samples-per-shard", "2", "--workers", "2", "--no-progress"]
    argv += ["--rgb-format", "png"]  # lossless: compared value by value
    assert main(argv) == 0
    samples = read_back(str(out / "train.manifest.json"))
    assert sorted(samples) == [f"nyud_{i:04d}" for i in nyu.train]
    for key, sample in samples.items():
        i = int(key.split("_")[1])
        np.testing.assert_array_equal(sample["semantic"], nyu.semantic[i])
        np.testing.assert_array_equal(sample["depth"], nyu.depth_m[i])
        np.testing.assert_array_equal(sample["rgb"], nyu.rgb[i])


def _error(capsys, truth, out, **override) -> str:
    paths = {"--mat": truth.mat, "--splits": truth.splits, "--class-map": truth.class_map, **override}
    argv = ["shard", "nyud", *[x for kv in paths.items() for x in (kv[0], str(kv[1]))]]
    assert main([*argv, "--split", "train", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and not (out / "train.manifest.json").exists()
    return err


def test_bad_inputs_are_one_line_naming_the_file(nyu, tmp_path, capsys):
    out = tmp_path / "out"
    assert str(tmp_path / "nope.mat") in _error(capsys, nyu, out, **{"--mat": tmp_path / "nope.mat"})
    err = _error(capsys, nyu, out, **{"--mat": nyu.splits})
    assert str(nyu.splits) in err and "v7.3" in err
    err = _error(capsys, nyu, out, **{"--splits": nyu.mat})
    assert str(nyu.mat) in err and "splits.mat" in err
    scipy.io.savemat(tmp_path / "map.mat", {"mapClass": np.ones((1, 13))})
    err = _error(capsys, nyu, out, **{"--class-map": tmp_path / "map.mat"})
    assert "map.mat" in err and "894" in err
    scipy.io.savemat(
        tmp_path / "splits.mat", {"trainNdxs": np.array([[1], [7]], np.uint16), "testNdxs": np.array([[2]], np.uint16)}
    )
    err = _error(capsys, nyu, out, **{"--splits": tmp_path / "splits.mat"})
    assert "outside 1..6" in err


def test_label_above_894_names_the_file_and_image(nyu, tmp_path, capsys):
    n = len(nyu.rgb)
    labels = np.stack([nyu.labels[i] for i in range(1, n + 1)])
    labels[2, 4, 4] = 900  # image 3, a train image
    write_nyud_labeled_mat(
        nyu.mat,
        np.stack([nyu.rgb[i] for i in range(1, n + 1)]),
        np.stack([nyu.depth_m[i] for i in range(1, n + 1)]),
        np.stack([nyu.raw_depth_m[i] for i in range(1, n + 1)]),
        labels,
    )
    err = _error(capsys, nyu, tmp_path / "out")
    assert str(nyu.mat) in err and "image 3" in err and "900" in err


def test_image_in_both_splits_is_caught(nyu, tmp_path):
    scipy.io.savemat(
        tmp_path / "s.mat", {"trainNdxs": np.array([[1], [2]], np.uint16), "testNdxs": np.array([[2]], np.uint16)}
    )
    with pytest.raises(UserError, match="both"):
        nyud.read_split_indices(str(tmp_path / "s.mat"), "train", 6)
