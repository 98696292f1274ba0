"""``padnet-dist shards inspect``: summary, --dump values equal to what was written, errors as one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from padnet_dist.cli import main
from padnet_dist.data.writer import DatasetInfo, write_shards

INFO = DatasetInfo(
    name="synthetic",
    classes=["road", "car", "sky"],
    palette=[(128, 64, 128), (0, 0, 142), (70, 130, 180)],
    camera_defaults={"fx": 30.0, "fy": 30.0, "cx": 7.5, "cy": 4.5},
)


def make_sample(index: int) -> dict:
    rng = np.random.default_rng(100 + index)
    height, width = 10, 16
    instances = np.zeros((height, width), dtype=np.int32)
    instances[2:5, 3:9] = 26 * 1000 + index
    return {
        "key": f"frame_{index:03d}",
        "rgb": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "semantic": rng.choice(np.array([0, 1, 2, 255], dtype=np.uint8), (height, width)),
        "depth": rng.uniform(0.0, 50.0, (height, width)).astype(np.float32),
        "instances": instances if index % 2 else None,
        "camera": {"fx": 30.0, "fy": 30.0, "cx": 7.5, "cy": 4.5, "baseline": 0.2},
        "meta": {"source": f"frame{index}"},
    }


def write(out_url: str, storage_cfg=None) -> str:
    write_shards(range(5), make_sample, out_url=out_url, split="val", info=INFO, storage_cfg=storage_cfg,
                 samples_per_shard=2, progress=False)  # fmt: skip
    return f"{out_url.rstrip('/')}/val.manifest.json"


def check_dump(directory, index: int) -> None:
    expected = make_sample(index)
    for name, dtype in (("rgb", np.uint8), ("semantic", np.uint8), ("depth", np.float32)):
        array = np.load(directory / f"{name}.npy")
        assert array.dtype == dtype and np.array_equal(array, expected[name])
    if expected["instances"] is None:
        assert not (directory / "instances.npy").exists()
    else:
        array = np.load(directory / "instances.npy")
        assert array.dtype == np.int32 and np.array_equal(array, expected["instances"])
    assert json.loads((directory / "camera.json").read_text()) == expected["camera"]


def test_summary_and_dump_local(tmp_path, capsys):
    manifest_url = write(str(tmp_path / "shards"))
    assert main(["shards", "inspect", manifest_url]) == 0
    out = capsys.readouterr().out
    for text in (
        "synthetic/val",
        "samples:        5",
        "shards:         3",
        "0:road",
        "format version: 1",
        '"fx": 30.0',
    ):
        assert text in out
    for index in (0, 3):
        dump = tmp_path / f"dump{index}"
        assert main(["shards", "inspect", manifest_url, "--index", str(index), "--dump", str(dump), "--verify"]) == 0
        check_dump(dump, index)
    assert "frame_003" in capsys.readouterr().out


@pytest.mark.integration
def test_dump_from_s3(s3, tmp_path):
    manifest_url = write(s3.url("ds"), s3.storage_cfg)
    dump = tmp_path / "dump"
    argv = ["shards", "inspect", manifest_url, "--index", "4", "--dump", str(dump), "--endpoint-url", s3.endpoint_url]
    assert main(argv) == 0
    check_dump(dump, 4)


def test_errors_are_one_line(tmp_path, capsys):
    missing = str(tmp_path / "nothing.manifest.json")
    assert main(["shards", "inspect", missing]) == 2
    err = capsys.readouterr().err.strip()
    assert missing in err and "padnet-dist shard" in err and len(err.splitlines()) == 1
    manifest_url = write(str(tmp_path / "shards"))
    assert main(["shards", "inspect", manifest_url, "--index", "5"]) == 2
    assert "outside 0..4" in capsys.readouterr().err
    shard = tmp_path / "shards" / "val-000001.tar"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF  # same size, one damaged byte
    shard.write_bytes(bytes(data))
    assert main(["shards", "inspect", manifest_url, "--verify"]) == 2
    assert "val-000001.tar" in capsys.readouterr().err
