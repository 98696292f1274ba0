"""Fixture builders: tiny Cityscapes and NYUD-v2 datasets in the real layouts, names, encodings and bit depths.

Each builder returns the ground truth it encoded, computed here independently of the converters (from the facts
in /work/shared/datasets.md), so tests can check conversions value by value. Sizes are small and arbitrary on
purpose: converters must not assume 2048x1024 or 640x480.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# Cityscapes: the 19 trained label ids, in train-id order (datasets.md).
CITYSCAPES_TRAIN_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
CITYSCAPES_INSTANCE_LABEL_IDS = (24, 25, 26, 27, 28, 29, 30, 31, 32, 33)
NYU_NUM_LABELS = 894


@dataclass
class CityscapesFrameTruth:
    city: str
    split: str
    rgb: np.ndarray  # uint8 (H, W, 3)
    label_ids: np.ndarray  # uint8 (H, W) as written
    semantic: np.ndarray  # uint8 (H, W) expected train ids
    disparity: np.ndarray  # uint16 (H, W) as written
    depth_m: np.ndarray  # float32 (H, W) expected metres, 0 invalid
    instances: np.ndarray  # int32 (H, W) expected
    camera: dict  # fx, fy, cx, cy, baseline as written


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def png_bit_depth(path: str | os.PathLike) -> int:
    """The bit depth field of a PNG's IHDR chunk (8 or 16)."""
    with open(path, "rb") as f:
        header = f.read(26)
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR", f"{path} is not a PNG"
    return header[24]


def cityscapes_city_camera(city_index: int, width: int, height: int) -> dict[str, float]:
    """A camera file's values, different per city, scaled from 2048x1024 to this fixture's size."""
    s = width / 2048
    return {
        "baseline": 0.209313 + 0.004 * city_index,
        "fx": (2262.52 + 5.0 * city_index) * s,
        "fy": (2265.30 + 4.0 * city_index) * s,
        "u0": (1096.98 - 7.0 * city_index) * s,
        "v0": (513.137 + 3.0 * city_index) * height / 1024,
    }


# the stored values p of the edge cases: no match, d = 0 (infinitely far), the farthest finite depth (d = 1/256 px),
# the nearest (largest 16-bit value) and two ordinary values
CITYSCAPES_EDGE_DISPARITIES = (0, 1, 2, 3, 65535, 5000)


def make_cityscapes_root(
    root: str | os.PathLike,
    *,
    split: str = "train",
    cities: tuple[str, ...] = ("aachen", "bochum"),
    frames_per_city: int = 2,
    size: tuple[int, int] = (64, 128),
    seed: int = 0,
) -> dict[str, CityscapesFrameTruth]:
    """Write `split` of a Cityscapes tree under `root`; returns {frame key: truth}. Call again for another split.

    Labels are 8x8 blocks covering every id 0..33 and 255 (license plate); instance classes get
    label_id*1000+k (some as plain-id group regions); disparity mixes 0 (invalid), 1 (infinite), 2 (the farthest
    finite depth, ~120 km) and real values; the first pixels of row 0 hold ``CITYSCAPES_EDGE_DISPARITIES``.
    """
    root = Path(root)
    height, width = size
    rng = np.random.default_rng([seed, len(split)])
    truth: dict[str, CityscapesFrameTruth] = {}
    block = 8
    grid_h, grid_w = -(-height // block), -(-width // block)
    for ci, city in enumerate(cities):
        cam = cityscapes_city_camera(ci + (3 if split != "train" else 0), width, height)
        for fi in range(frames_per_city):
            stem = f"{city}_{ci * 10:06d}_{19 + fi * 7:06d}"
            values = np.array([*range(34), 255])
            blocks = rng.choice(values, size=grid_h * grid_w)
            blocks[: len(values)] = rng.permutation(values)[: grid_h * grid_w]
            label_ids = np.kron(blocks.reshape(grid_h, grid_w), np.ones((block, block), np.int64))
            label_ids = label_ids[:height, :width].astype(np.uint8)
            inst_blocks = blocks.astype(np.int64).copy()
            counts: dict[int, int] = {}
            for b, lid in enumerate(blocks):
                if lid in CITYSCAPES_INSTANCE_LABEL_IDS and rng.random() < 0.8:  # else a group region: plain id
                    inst_blocks[b] = lid * 1000 + counts.get(lid, 0)
                    counts[lid] = counts.get(lid, 0) + 1
                elif lid == 255:
                    inst_blocks[b] = 0
            instances = np.kron(inst_blocks.reshape(grid_h, grid_w), np.ones((block, block), np.int64))
            instances = instances[:height, :width]
            disparity = rng.integers(2, 30000, size=(height, width)).astype(np.uint16)
            disparity[rng.random((height, width)) < 0.1] = 0
            disparity[rng.random((height, width)) < 0.05] = 1
            disparity[rng.random((height, width)) < 0.03] = 2  # d = 1/256 px: about 120 km
            disparity[0, : len(CITYSCAPES_EDGE_DISPARITIES)] = CITYSCAPES_EDGE_DISPARITIES
            rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)

            valid = disparity > 1
            depth = np.zeros((height, width), np.float64)
            depth[valid] = cam["baseline"] * cam["fx"] / ((disparity[valid].astype(np.float64) - 1) / 256)
            semantic = np.full((height, width), 255, np.uint8)
            for train_id, lid in enumerate(CITYSCAPES_TRAIN_LABEL_IDS):
                semantic[label_ids == lid] = train_id

            def path(kind: str, suffix: str, city: str = city, stem: str = stem) -> Path:
                return root / kind / split / city / f"{stem}_{suffix}"

            _save_png(rgb, path("leftImg8bit", "leftImg8bit.png"))
            _save_png(label_ids, path("gtFine", "gtFine_labelIds.png"))
            _save_png(instances.astype(np.uint16), path("gtFine", "gtFine_instanceIds.png"))  # mode I;16
            _save_png(disparity, path("disparity", "disparity.png"))
            colour = np.zeros((height, width, 4), np.uint8)
            colour[..., 3] = 255
            _save_png(colour, path("gtFine", "gtFine_color.png"))
            polygons = {"imgHeight": height, "imgWidth": width, "objects": []}
            path("gtFine", "gtFine_polygons.json").write_text(json.dumps(polygons))
            camera_json = {
                "extrinsic": {
                    "baseline": cam["baseline"],
                    "pitch": 0.038,
                    "roll": 0.0,
                    "x": 1.7,
                    "y": 0.1,
                    "yaw": -0.02,
                    "z": 1.18,
                },
                "intrinsic": {"fx": cam["fx"], "fy": cam["fy"], "u0": cam["u0"], "v0": cam["v0"]},
            }
            path("camera", "camera.json").parent.mkdir(parents=True, exist_ok=True)
            path("camera", "camera.json").write_text(json.dumps(camera_json, indent=2))
            truth[stem] = CityscapesFrameTruth(
                city=city,
                split=split,
                rgb=rgb,
                label_ids=label_ids,
                semantic=semantic,
                disparity=disparity,
                depth_m=depth.astype(np.float32),
                instances=instances.astype(np.int32),
                camera={
                    "fx": cam["fx"],
                    "fy": cam["fy"],
                    "cx": cam["u0"],
                    "cy": cam["v0"],
                    "baseline": cam["baseline"],
                },
            )
    return truth


def cityscapes_frame_path(root: str | os.PathLike, split: str, key: str, kind: str, suffix: str) -> Path:
    """e.g. (root, "train", "aachen_000000_000019", "disparity", "disparity.png")."""
    city = key.split("_")[0]
    return Path(root) / kind / split / city / f"{key}_{suffix}"


# ------------------------------------------------------------------------------------------------------------
@dataclass
class NyudTruth:
    mat: Path
    splits: Path
    class_map: Path
    train: list[int]  # 1-based
    test: list[int]
    rgb: dict[int, np.ndarray]  # by 1-based index: uint8 (H, W, 3)
    depth_m: dict[int, np.ndarray]  # in-painted, float32 (H, W)
    raw_depth_m: dict[int, np.ndarray]  # 0 = hole
    labels: dict[int, np.ndarray]  # uint16 NYU labels 0..894
    semantic: dict[int, np.ndarray]  # expected train ids 0..39, 255 for unlabelled
    map_class: np.ndarray  # (894,) values 1..40


def matlab_73_header() -> bytes:
    """The 512-byte user block MATLAB writes in front of the HDF5 data of a v7.3 MAT-file."""
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Wed Nov 25 12:00:00 2026 HDF5 schema 1.00 ."
    return text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM" + b"\x00" * (512 - 128)


def write_nyud_labeled_mat(path: Path, rgb: np.ndarray, depth: np.ndarray, raw: np.ndarray, labels: np.ndarray) -> None:
    """Write (N, H, W[, 3]) arrays in h5py's axis order of the real file (MATLAB is column-major)."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("images", data=rgb.transpose(0, 3, 2, 1))  # (N, 3, W, H)
        f.create_dataset("depths", data=depth.transpose(0, 2, 1).astype(np.float32))
        f.create_dataset("rawDepths", data=raw.transpose(0, 2, 1).astype(np.float32))
        f.create_dataset("labels", data=labels.transpose(0, 2, 1).astype(np.uint16))
        f.create_dataset("instances", data=np.zeros(labels.transpose(0, 2, 1).shape, np.uint8))
        for name, cls in (("images", "uint8"), ("depths", "single"), ("rawDepths", "single"), ("labels", "uint16")):
            f[name].attrs["MATLAB_class"] = np.bytes_(cls)
    with open(path, "r+b") as f:
        f.write(matlab_73_header())


def make_nyud_files(
    root: str | os.PathLike,
    *,
    num_images: int = 6,
    size: tuple[int, int] = (24, 32),
    train: tuple[int, ...] | None = None,
    seed: int = 0,
) -> NyudTruth:
    """Write nyu_depth_v2_labeled.mat (v7.3/HDF5), splits.mat and classMapping40.mat (v5) under `root`."""
    import scipy.io

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    height, width = size
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(num_images, height, width, 3), dtype=np.uint8)
    depth = rng.uniform(0.7, 9.9, size=(num_images, height, width)).astype(np.float32)
    raw = depth * (rng.random(depth.shape) > 0.2)
    labels = rng.integers(0, NYU_NUM_LABELS + 1, size=(num_images, height, width)).astype(np.uint16)
    labels[:, 0, :3] = (0, 1, NYU_NUM_LABELS)  # the extremes always present
    map_class = rng.integers(1, 41, size=NYU_NUM_LABELS)
    map_class[:40] = np.arange(1, 41)
    train_idx = list(train) if train is not None else list(range(1, num_images + 1, 2)) + [num_images]
    train_idx = sorted(set(train_idx))
    test_idx = [i for i in range(1, num_images + 1) if i not in train_idx]

    write_nyud_labeled_mat(root / "nyu_depth_v2_labeled.mat", rgb, depth, raw, labels)
    scipy.io.savemat(
        root / "splits.mat",
        {
            "trainNdxs": np.array(train_idx, np.uint16).reshape(-1, 1),
            "testNdxs": np.array(test_idx, np.uint16).reshape(-1, 1),
        },
    )
    scipy.io.savemat(root / "classMapping40.mat", {"mapClass": map_class.reshape(1, -1).astype(np.float64)})

    semantic = {}
    for i in range(num_images):
        sem = np.full((height, width), 255, np.uint8)
        labelled = labels[i] > 0
        sem[labelled] = map_class[labels[i][labelled].astype(np.int64) - 1] - 1
        semantic[i + 1] = sem
    return NyudTruth(
        mat=root / "nyu_depth_v2_labeled.mat",
        splits=root / "splits.mat",
        class_map=root / "classMapping40.mat",
        train=train_idx,
        test=test_idx,
        rgb={i + 1: rgb[i] for i in range(num_images)},
        depth_m={i + 1: depth[i] for i in range(num_images)},
        raw_depth_m={i + 1: raw[i].astype(np.float32) for i in range(num_images)},
        labels={i + 1: labels[i] for i in range(num_images)},
        semantic=semantic,
        map_class=map_class,
    )


# ------------------------------------------------------------------------------------------------------------
def read_back(manifest_url: str, storage_cfg=None) -> dict[str, dict]:  # noqa: ANN001 - StorageConfig | None
    """Every sample of a published split, decoded with ``format.decode_sample``, by key (tar order kept)."""
    from padnet_dist.data.format import decode_sample, iter_tar_samples
    from padnet_dist.data.manifest import read_manifest
    from padnet_dist.storage import storage_for

    manifest = read_manifest(manifest_url, storage_cfg)
    samples: dict[str, dict] = {}
    for url in manifest.shard_urls(manifest_url):
        with storage_for(url, storage_cfg).open_read(url) as stream:
            for key, members in iter_tar_samples(stream, source=url):
                samples[key] = decode_sample(members, key)
    return samples
