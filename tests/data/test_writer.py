"""The shard writer: layout, manifest, resumable re-runs and publication only when complete."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tarfile
import time

import numpy as np
import pytest

from padnet_dist.data.format import decode_sample, encode_sample, iter_tar_samples
from padnet_dist.data.manifest import Manifest, ManifestError, read_manifest, write_manifest
from padnet_dist.data.writer import DatasetInfo, _tar_size, write_shards
from padnet_dist.errors import UserError
from padnet_dist.storage import storage_for

INFO = DatasetInfo(
    name="synthetic",
    classes=[f"class{i}" for i in range(8)],
    palette=[(i * 30, 255 - i * 30, i * 7) for i in range(8)],
    camera_defaults={"fx": 50.0, "fy": 50.0, "cx": 19.5, "cy": 11.5},
)


def make_sample(index: int) -> dict:
    rng = np.random.default_rng(index)
    height, width = 12, 20
    return {
        "key": f"sample_{index:04d}",
        "rgb": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "semantic": rng.integers(0, 8, (height, width), dtype=np.uint8),
        "depth": rng.uniform(0.0, 10.0, (height, width)).astype(np.float32),
        "instances": None,
        "camera": {"fx": 50.0, "fy": 50.0, "cx": 9.5, "cy": 5.5},
        "meta": {"source": f"frame{index}.png"},
    }


def load_logged(index: int, log_dir: str, fail_at: int = -1, key_of=None) -> dict:
    """A converter's ``load``: records each call (across processes) and can fail like a broken input file."""
    with open(os.path.join(log_dir, "loads.log"), "a") as f:
        f.write(f"{index}\n")
    if index == fail_at:
        raise UserError(f"cannot read frame{index}.png: file is truncated")
    sample = make_sample(index)
    if key_of is not None:
        sample["key"] = key_of(index)
    return sample


def same_key(index: int) -> str:
    return "always_the_same"


def loads(log_dir) -> list[int]:
    path = os.path.join(log_dir, "loads.log")
    return [int(x) for x in open(path).read().split()] if os.path.exists(path) else []


def check_output(manifest_url: str, storage_cfg, num_samples: int) -> None:
    manifest = read_manifest(manifest_url, storage_cfg)
    assert manifest.num_samples == num_samples and manifest.dataset == "synthetic" and manifest.split == "train"
    assert manifest.classes == INFO.classes and manifest.palette == INFO.palette
    assert manifest.camera_defaults == INFO.camera_defaults
    index = 0
    for shard, url in zip(manifest.shards, manifest.shard_urls(manifest_url)):
        data = storage_for(url, storage_cfg).read_bytes(url)
        assert shard.num_bytes == len(data) and shard.sha256 == hashlib.sha256(data).hexdigest()
        with storage_for(url, storage_cfg).open_read(url) as stream:
            samples = [decode_sample(m, k) for k, m in iter_tar_samples(stream)]
        assert [s["key"] for s in samples] == shard.keys and len(samples) == shard.num_samples
        for sample in samples:
            expected = make_sample(index)
            for name in ("rgb", "semantic", "depth"):
                assert np.array_equal(sample[name], expected[name])
            assert sample["meta"] == {"dataset": "synthetic", "split": "train", "source": f"frame{index}.png"}
            index += 1
    assert index == num_samples


def test_local_layout_manifest_and_content(tmp_path):
    out = str(tmp_path / "shards")
    load = functools.partial(load_logged, log_dir=str(tmp_path))
    manifest = write_shards(
        list(range(5)), load, out_url=out, split="train", info=INFO, samples_per_shard=2, progress=False
    )
    assert [s.name for s in manifest.shards] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert [s.num_samples for s in manifest.shards] == [2, 2, 1]
    assert sorted(os.listdir(out)) == sorted(
        ["train.manifest.json"] + [f"train-00000{i}.tar{x}" for i in range(3) for x in ("", ".done.json")]
    )
    check_output(os.path.join(out, "train.manifest.json"), None, 5)
    # a dataset directory can be moved: shard names are relative to the manifest
    moved = str(tmp_path / "moved")
    shutil.move(out, moved)
    check_output(os.path.join(moved, "train.manifest.json"), None, 5)


def test_identical_input_gives_byte_identical_shards(tmp_path):
    """A shard's SHA-256 identifies its content: two conversions of the same samples, at different times, in
    different directories, give the same bytes (fixed mtime, owner and mode in every tar header)."""
    load = functools.partial(load_logged, log_dir=str(tmp_path))
    digests = []
    for run in ("first", "second"):
        out = tmp_path / run
        manifest = write_shards(
            list(range(3)), load, out_url=str(out), split="train", info=INFO, samples_per_shard=2, progress=False
        )
        digests.append([(s.name, s.sha256) for s in manifest.shards])
        time.sleep(1.1)  # a header carrying the wall clock would now differ
    assert digests[0] == digests[1]
    for name, _ in digests[0]:
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()
        with tarfile.open(tmp_path / "first" / name) as tar:
            headers = {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in tar.getmembers()}
        assert headers == {(0, 0, 0, "", "", 0o644)}


def test_manifest_is_checked_against_the_schema_in_shards(tmp_path):
    out = tmp_path / "shards"
    load = functools.partial(load_logged, log_dir=str(tmp_path))
    write_shards(list(range(2)), load, out_url=str(out), split="train", info=INFO, progress=False)
    url = str(out / "train.manifest.json")
    data = json.loads((out / "train.manifest.json").read_text())
    data["shards"][0]["sha256"] = "not-a-digest"
    (out / "train.manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="shards/0/sha256") as info:
        read_manifest(url)
    assert url in str(info.value) and "\n" not in str(info.value)
    manifest = Manifest.from_dict(
        {**data, "shards": [{**data["shards"][0], "sha256": "0" * 64}], "palette": [[0, 0, 300]]}
    )
    with pytest.raises(ManifestError, match="palette/0/2"):
        write_manifest(manifest, str(tmp_path / "bad.manifest.json"))
    assert not (tmp_path / "bad.manifest.json").exists()


@pytest.mark.integration
def test_s3_output_with_worker_processes(s3, tmp_path):
    load = functools.partial(load_logged, log_dir=str(tmp_path))
    write_shards(
        list(range(7)), load, out_url=s3.url("ds/"), split="train", info=INFO,
        storage_cfg=s3.storage_cfg, samples_per_shard=3, num_workers=2, progress=False,
    )  # fmt: skip
    check_output(s3.url("ds/train.manifest.json"), s3.storage_cfg, 7)
    assert sorted(loads(tmp_path)) == list(range(7))


def test_rerun_skips_complete_shards_and_rebuilds_missing_ones(tmp_path):
    out = str(tmp_path / "shards")
    load = functools.partial(load_logged, log_dir=str(tmp_path))
    kwargs = dict(out_url=out, split="train", info=INFO, samples_per_shard=2, progress=False)
    write_shards(list(range(6)), load, **kwargs)
    mtimes = {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in os.listdir(out)}
    assert len(loads(tmp_path)) == 6

    write_shards(list(range(6)), load, **kwargs)
    assert len(loads(tmp_path)) == 6  # nothing loaded again
    for name in ("train-000000.tar", "train-000001.tar", "train-000002.tar"):
        assert os.stat(os.path.join(out, name)).st_mtime_ns == mtimes[name]

    os.remove(os.path.join(out, "train-000001.tar.done.json"))  # as if interrupted before the record
    write_shards(list(range(6)), load, **kwargs)
    assert loads(tmp_path)[6:] == [2, 3]
    assert os.stat(os.path.join(out, "train-000000.tar")).st_mtime_ns == mtimes["train-000000.tar"]
    check_output(os.path.join(out, "train.manifest.json"), None, 6)

    # fewer jobs: the shard beyond the new plan is removed, the manifest lists only the new plan
    manifest = write_shards(list(range(4)), load, **kwargs)
    assert manifest.num_shards == 2 and not os.path.exists(os.path.join(out, "train-000002.tar"))


def test_load_error_publishes_no_manifest_and_unpublishes_the_old_one(tmp_path):
    out = str(tmp_path / "shards")
    manifest_url = os.path.join(out, "train.manifest.json")
    broken = functools.partial(load_logged, log_dir=str(tmp_path), fail_at=3)
    with pytest.raises(UserError) as info:
        write_shards(list(range(6)), broken, out_url=out, split="train", info=INFO, samples_per_shard=2, progress=False)
    assert "frame3.png" in str(info.value) and "3" in str(info.value) and "\n" not in str(info.value)
    assert not os.path.exists(manifest_url)
    assert os.path.exists(os.path.join(out, "train-000000.tar.done.json"))  # earlier shards are kept for a re-run
    assert not any(name.startswith("train-000001") for name in os.listdir(out))

    good = functools.partial(load_logged, log_dir=str(tmp_path))
    write_shards(list(range(6)), good, out_url=out, split="train", info=INFO, samples_per_shard=2, progress=False)
    assert os.path.exists(manifest_url)
    with pytest.raises(UserError):
        write_shards(
            list(range(1, 7)), broken, out_url=out, split="train", info=INFO, samples_per_shard=2, progress=False
        )
    with pytest.raises(ManifestError, match="padnet-dist shard"):
        read_manifest(manifest_url)


def test_duplicate_keys_are_refused(tmp_path):
    load = functools.partial(load_logged, log_dir=str(tmp_path), key_of=same_key)
    out = str(tmp_path / "shards")
    with pytest.raises(UserError, match="always_the_same"):
        write_shards(list(range(4)), load, out_url=out, split="train", info=INFO, samples_per_shard=3, progress=False)
    assert not os.path.exists(os.path.join(out, "train.manifest.json"))


def test_default_shard_size_comes_from_the_first_sample(tmp_path):
    sample_bytes = _tar_size(
        encode_sample({**make_sample(0), "meta": {"dataset": "synthetic", "split": "train", "source": "frame0.png"}})
    )
    load = functools.partial(load_logged, log_dir=str(tmp_path))
    manifest = write_shards(
        list(range(7)), load, out_url=str(tmp_path / "s"), split="train", info=INFO,
        target_shard_bytes=int(3.5 * sample_bytes), progress=False,
    )  # fmt: skip
    assert [s.num_samples for s in manifest.shards] == [3, 3, 1]


def test_read_manifest_errors_name_the_url(tmp_path):
    url = str(tmp_path / "val.manifest.json")
    with pytest.raises(ManifestError, match="padnet-dist shard") as info:
        read_manifest(url)
    assert url in str(info.value)
    (tmp_path / "val.manifest.json").write_text(json.dumps({"format_version": 1, "dataset": "x"}))
    with pytest.raises(ManifestError, match="malformed") as info:
        read_manifest(url)
    assert url in str(info.value) and "\n" not in str(info.value)


def test_load_error_in_a_worker_process_reaches_the_caller(tmp_path):
    out = str(tmp_path / "shards")
    broken = functools.partial(load_logged, log_dir=str(tmp_path), fail_at=4)
    with pytest.raises(UserError, match="frame4.png"):
        write_shards(list(range(6)), broken, out_url=out, split="train", info=INFO, samples_per_shard=2,
                     num_workers=2, progress=False)  # fmt: skip
    assert not os.path.exists(os.path.join(out, "train.manifest.json"))
    assert not os.path.exists(os.path.join(out, "train-000002.tar"))
