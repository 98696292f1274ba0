"""Shard sample format: exact roundtrips, validation on encode, specific errors on corrupt members."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from padnet_dist.data.format import (
    CorruptSample,
    decode_depth,
    decode_sample,
    encode_depth,
    encode_sample,
    iter_tar_samples,
)
from padnet_dist.errors import UserError


def make_sample(key: str = "aachen_000000_000019", height: int = 24, width: int = 40, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 80.0, (height, width)).astype(np.float32)
    depth[rng.random((height, width)) < 0.2] = 0.0
    depth[0, :4] = [np.float32(1e-40), np.float32(3.4e38), np.float32(1.0000001), np.float32(7.25)]  # odd bit patterns
    instances = np.full((height, width), 7, dtype=np.int32)
    instances[5:10, 5:10] = 26 * 1000 + 3
    instances[12:, :] = 33 * 1000 + 999
    return {
        "key": key,
        "rgb": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "semantic": rng.choice(np.array([0, 1, 7, 18, 255], dtype=np.uint8), (height, width)),
        "depth": depth,
        "instances": instances,
        "camera": {"fx": 2262.52, "fy": 2265.30, "cx": 1096.98, "cy": 513.137, "baseline": 0.209},
        "meta": {"dataset": "cityscapes", "split": "train", "source": {"rgb": "leftImg8bit/x.png"}},
    }


def test_roundtrip_is_exact_for_every_member():
    sample = make_sample()
    members = encode_sample(sample)
    assert set(members) == {"rgb.png", "semantic.png", "depth.f32z", "instances.png", "camera.json", "meta.json"}
    out = decode_sample(members, sample["key"])
    assert out["key"] == sample["key"]
    for name, dtype in (("rgb", np.uint8), ("semantic", np.uint8), ("instances", np.int32)):
        assert out[name].dtype == dtype and np.array_equal(out[name], sample[name])
    assert out["depth"].dtype == np.float32
    assert np.array_equal(out["depth"].view(np.uint32), sample["depth"].view(np.uint32))  # bitwise
    assert out["camera"] == sample["camera"] and out["meta"] == sample["meta"]


@pytest.mark.parametrize("kind", ["quantised", "noisy"])
def test_depth_codec_is_bitwise_lossless_for_both_filters(kind):
    rng = np.random.default_rng(1)
    if kind == "quantised":  # depth = b f / d from 1/256 px disparity steps: few distinct values
        depth = (0.21 * 2262.0 / (rng.integers(257, 30000, (64, 96)) / 256.0)).astype(np.float32)
    else:
        depth = rng.normal(3.0, 0.5, (64, 96)).astype(np.float32)
    data = encode_depth(depth)
    assert np.array_equal(decode_depth(data).view(np.uint32), depth.view(np.uint32))


def test_instances_absent_and_jpeg_option():
    sample = make_sample()
    sample["instances"] = None
    members = encode_sample(sample, rgb_format="jpeg")
    assert "instances.png" not in members and "rgb.jpg" in members
    out = decode_sample(members, sample["key"])
    assert out["instances"] is None
    assert out["rgb"].shape == sample["rgb"].shape and out["rgb"].dtype == np.uint8


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.update(semantic=s["semantic"][:-1]), "sizes disagree"),
        (lambda s: s.update(depth=s["depth"][:, :-2]), "sizes disagree"),
        (lambda s: s.update(instances=s["instances"][1:]), "sizes disagree"),
        (lambda s: s.update(depth=s["depth"].astype(np.float64)), "dtype float64"),
        (lambda s: s.update(rgb=s["rgb"][..., 0]), "shape"),
        (lambda s: s["instances"].__setitem__((0, 0), 70000), "outside 0..65535"),
        (lambda s: s["depth"].__setitem__((0, 0), np.nan), "finite"),
        (lambda s: s.update(camera={"fx": 1.0}), "fy, cx, cy"),
    ],
)
def test_encode_validates_and_names_the_key(change, message):
    sample = make_sample(key="frankfurt_000001_000042")
    change(sample)
    with pytest.raises(UserError, match=message) as info:
        encode_sample(sample)
    assert "frankfurt_000001_000042" in str(info.value)


@pytest.mark.parametrize("key", ["a.b", "", "with space", "../up", None])
def test_keys_must_be_tar_safe(key):
    sample = make_sample()
    sample["key"] = key
    with pytest.raises(UserError, match="invalid sample key"):
        encode_sample(sample)


@pytest.mark.parametrize("suffix", ["rgb.png", "semantic.png", "depth.f32z", "instances.png", "camera.json"])
def test_corrupt_member_raises_corrupt_sample_naming_key_and_member(suffix):
    sample = make_sample(key="bonn_000001_000019")
    members = encode_sample(sample)
    members[suffix] = members[suffix][: len(members[suffix]) // 2]
    with pytest.raises(CorruptSample) as info:
        decode_sample(members, "bonn_000001_000019")
    assert "bonn_000001_000019" in str(info.value) and suffix in str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)


def test_missing_member_is_corrupt():
    members = encode_sample(make_sample())
    del members["depth.f32z"]
    with pytest.raises(CorruptSample, match="depth"):
        decode_sample(members, "k")


def test_iter_tar_samples_groups_members_by_key():
    buf = io.BytesIO()
    samples = [make_sample(key=f"frame_{i}", seed=i) for i in range(3)]
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for sample in samples:
            for suffix, data in encode_sample(sample).items():
                info = tarfile.TarInfo(f"{sample['key']}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    decoded = [decode_sample(members, key) for key, members in iter_tar_samples(buf)]
    assert [s["key"] for s in decoded] == ["frame_0", "frame_1", "frame_2"]
    assert np.array_equal(decoded[2]["rgb"], samples[2]["rgb"])
    with pytest.raises(CorruptSample, match="not a readable tar"):
        list(iter_tar_samples(io.BytesIO(b"garbage" * 100), source="bad.tar"))
