"""`padnet-dist shard`: shards and manifest written locally and to S3 read back exactly; re-runs skip; bad input."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from padnet_dist.cli import main
from padnet_dist.data.converters import CONVERTERS, get_converter
from padnet_dist.data.converters.synthetic import SyntheticScene, load_scene, split_seed
from padnet_dist.data.manifest import read_manifest
from padnet_dist.errors import UserError
from tests.helpers.raw_datasets import read_back

SIZE = ["--height", "32", "--width", "64"]


def _assert_same(sample: dict, expected: dict) -> None:
    for name in ("rgb", "semantic", "depth", "instances"):
        np.testing.assert_array_equal(sample[name], expected[name])
    assert sample["camera"] == pytest.approx(expected["camera"])


def test_registry_is_explicit_and_complete():
    assert set(CONVERTERS) == {"cityscapes", "nyud", "synthetic"}
    for name in CONVERTERS:
        module = get_converter(name)
        assert callable(module.plan) and dataclasses.is_dataclass(module.OPTIONS) and module.SUMMARY
        assert not hasattr(module, "add_arguments")  # the command owns the flags
    with pytest.raises(UserError, match="unknown dataset 'kitti'"):
        get_converter("kitti")


def test_synthetic_to_local_path_reads_back_and_rerun_skips(tmp_path, capsys):
    out = tmp_path / "synth"
    argv = ["shard", "synthetic", "--num", "64", *SIZE, "--seed", "5", "--split", "train", "--out", str(out)]
    argv += ["--samples-per-shard", "16", "--workers", "2", "--no-progress", "--rgb-format", "png"]  # lossless
    assert main(argv) == 0
    assert "64 synthetic/train samples in 4 shards" in capsys.readouterr().out
    manifest = read_manifest(str(out / "train.manifest.json"))
    assert manifest.num_samples == 64 and manifest.num_shards == 4 and manifest.classes[0] == "ground"
    assert len(manifest.classes) == 8 and manifest.dataset == "synthetic"
    samples = read_back(str(out / "train.manifest.json"))
    assert list(samples) == [f"synth_5_{i:07d}" for i in range(64)]  # in order, none lost or duplicated
    for i in (0, 17, 63):
        _assert_same(samples[f"synth_5_{i:07d}"], load_scene(SyntheticScene(5, i, 32, 64)))

    tars = sorted(out.glob("train-*.tar"))
    before = {p: p.stat().st_mtime_ns for p in tars}
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in tars} == before  # complete shards are not rewritten
    assert read_manifest(str(out / "train.manifest.json")).num_samples == 64


def test_splits_get_different_scenes_by_default(tmp_path):
    out = tmp_path / "synth"
    for split in ("train", "val"):
        assert (
            main(["shard", "synthetic", "--num", "3", *SIZE, "--split", split, "--out", str(out), "--no-progress"]) == 0
        )
    train, val = read_back(str(out / "train.manifest.json")), read_back(str(out / "val.manifest.json"))
    assert not set(train) & set(val)
    assert next(iter(train)) == f"synth_{split_seed('train')}_0000000"


def test_jpg_rgb_is_the_default_format_and_scene_kind(tmp_path):
    from padnet_dist.data.manifest import read_manifest

    out = tmp_path / "jpg"
    argv = ["shard", "synthetic", "--num", "2", *SIZE, "--split", "val", "--out", str(out)]
    assert main([*argv, "--scene", "room", "--no-progress"]) == 0
    assert read_manifest(str(out / "val.manifest.json")).rgb_format == "jpeg"  # new shards: JPEG rgb (measured)
    sample = next(iter(read_back(str(out / "val.manifest.json")).values()))
    expected = load_scene(SyntheticScene(split_seed("val"), 0, 32, 64, "room"))
    assert sample["meta"]["scene"] == "room"
    np.testing.assert_array_equal(sample["semantic"], expected["semantic"])  # labels stay lossless
    assert np.abs(sample["rgb"].astype(int) - expected["rgb"]).mean() < 8


@pytest.mark.integration
def test_synthetic_to_s3(s3, capsys):
    out = s3.url("datasets/synth")
    argv = ["shard", "synthetic", "--num", "64", *SIZE, "--seed", "1", "--split", "train", "--out", out]
    argv += ["--endpoint-url", s3.endpoint_url, "--samples-per-shard", "20", "--no-progress", "--rgb-format", "png"]
    assert main(argv) == 0
    manifest_url = s3.url("datasets/synth/train.manifest.json")
    manifest = read_manifest(manifest_url, s3.storage_cfg)
    assert manifest.num_samples == 64 and manifest.num_shards == 4
    samples = read_back(manifest_url, s3.storage_cfg)
    assert len(samples) == 64
    _assert_same(samples["synth_1_0000042"], load_scene(SyntheticScene(1, 42, 32, 64)))
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket)["Contents"]]
    assert "datasets/synth/train-000003.tar" in keys
    before = json.loads(
        s3.client().get_object(Bucket=s3.bucket, Key="datasets/synth/train.manifest.json")["Body"].read()
    )
    assert main(argv) == 0  # re-run: skips every shard, same manifest
    after = json.loads(
        s3.client().get_object(Bucket=s3.bucket, Key="datasets/synth/train.manifest.json")["Body"].read()
    )
    assert [s["sha256"] for s in after["shards"]] == [s["sha256"] for s in before["shards"]]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--num", "0"], "num=0"),
        (["--num", "2", "--workers", "0"], "--workers 0"),
        (["--num", "2", "--height", "4"], "at least 8x8"),
        (["--num", "2", "--samples-per-shard", "0"], "--samples-per-shard 0"),
    ],
)
def test_bad_arguments_are_one_line(tmp_path, capsys, extra, message):
    argv = ["shard", "synthetic", *extra, "--split", "train", "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0
    assert not (tmp_path / "o").exists()


def test_missing_dataset_root_is_one_line(tmp_path, capsys):
    argv = ["shard", "cityscapes", "--root", str(tmp_path / "cs"), "--split", "val", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert str(tmp_path / "cs") in err and err.count("\n") == 0


def test_flags_map_to_the_converters_typed_options(tmp_path):
    """Each dataset's flags become its converter's OPTIONS dataclass, field by field (no argparse in converters)."""
    import argparse

    from padnet_dist.commands.shard import add_arguments, converter_options
    from padnet_dist.data.converters.cityscapes import CityscapesOptions
    from padnet_dist.data.converters.nyud import NyudOptions
    from padnet_dist.data.converters.synthetic import SyntheticOptions

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = ["--out", str(tmp_path)]
    cases = {
        ("nyud", "--mat", "m.mat", "--splits", "s.mat", "--class-map", "c.mat", "--split", "test", "--raw-depth"): (
            NyudOptions(mat="m.mat", splits="s.mat", class_map="c.mat", split="test", raw_depth=True)
        ),
        ("cityscapes", "--root", "/cs", "--split", "val"): CityscapesOptions(root="/cs", split="val"),
        ("synthetic", "--num", "3", "--split", "train", "--scene", "room"): SyntheticOptions(
            split="train", num=3, scene="room"
        ),
    }
    for argv, expected in cases.items():
        assert converter_options(parser.parse_args([*argv, *out])) == expected
