"""NYU Depth V2 (labelled subset) from the official files to samples, with the 40-class mapping.

Inputs: ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5, read with h5py; axes reversed: image i is
``images[i].transpose(2, 1, 0)``, depth ``depths[i].T``, labels ``labels[i].T``), ``splits.mat`` (MATLAB v5:
``trainNdxs`` 795, ``testNdxs`` 654, 1-based) and ``classMapping40.mat`` (``mapClass`` (1, 894): 40-class id of
NYU label k is ``mapClass[k - 1]``). Outputs:
    semantic  train id = class40 - 1 (0..39); NYU label 0 (unlabelled) -> 255;
    depth     metres: the toolbox's in-painted ``depths`` (dense, every pixel valid) by default, or with
              ``raw_depth`` the Kinect's ``rawDepths`` (0 = hole = invalid);
    instances None (NYU numbers instances within a class only; nothing downstream needs them);
    camera    the toolbox's RGB intrinsics converted from its 1-based pixel coordinates to 0-based
              (cx = 325.5824 - 1, cy = 253.7362 - 1), scaled if an image is not 640x480;
    key       ``nyud_{index:04d}`` with the 1-based index of splits.mat.
The .mat file is opened lazily once per worker process; a job is just (file, index, depth kind).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from padnet_dist.data.converters import Conversion
from padnet_dist.errors import UserError

SUMMARY = "NYUD-v2 labelled set, 40 classes"
SPLITS = ("train", "test")
NUM_NYU_LABELS = 894
NYU_WIDTH, NYU_HEIGHT = 640, 480
# Toolbox camera_params.m (fx_rgb, fy_rgb, cx_rgb, cy_rgb); cx, cy count pixels from 1.
FX_RGB, FY_RGB, CX_RGB_1BASED, CY_RGB_1BASED = 518.8579, 519.4696, 325.5824, 253.7362
NYU40_CLASSES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat",
    "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel", "shower curtain", "box",
    "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
)  # fmt: skip
_SPLIT_VARIABLES = {"train": "trainNdxs", "test": "testNdxs"}


@dataclass(frozen=True)
class NyudImage:
    """One labelled image: its 1-based index in `mat` and the depth map to take. Picklable job."""

    mat: str
    index: int
    depth: str = "inpainted"  # or "raw"


def nyu_camera(height: int = NYU_HEIGHT, width: int = NYU_WIDTH) -> dict[str, float]:
    """RGB intrinsics in 0-based pixel coordinates for an image of `height` x `width` (640x480 unscaled)."""
    sx, sy = width / NYU_WIDTH, height / NYU_HEIGHT
    # 0-based centre of a pixel; rescaling maps pixel edges, so shift by half a pixel around the scaling
    cx0, cy0 = CX_RGB_1BASED - 1.0, CY_RGB_1BASED - 1.0
    return {"fx": FX_RGB * sx, "fy": FY_RGB * sy, "cx": (cx0 + 0.5) * sx - 0.5, "cy": (cy0 + 0.5) * sy - 0.5}


def nyu40_palette() -> list[tuple[int, int, int]]:
    """A fixed, distinct colour per class (the PASCAL VOC bit-interleaving colour map, classes 1..40)."""
    palette = []
    for label in range(1, len(NYU40_CLASSES) + 1):
        r = g = b = 0
        c = label
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette.append((r, g, b))
    return palette


# -- reading the .mat files -------------------------------------------------------------------------------
_OPEN_FILES: dict[tuple, object] = {}


def _labeled_file(path: str):  # noqa: ANN202 - an h5py.File
    """The HDF5 handle of `path`, opened once per process (a handle must not cross a fork) and per file version."""
    import h5py

    try:
        stat = os.stat(path)
    except OSError as e:
        raise UserError(f"cannot open {path} ({e.strerror}): check the path of nyu_depth_v2_labeled.mat") from None
    key = (os.getpid(), path, stat.st_ino, stat.st_mtime_ns, stat.st_size)
    handle = _OPEN_FILES.get(key)
    if handle is None:
        try:
            handle = h5py.File(path, "r")
        except OSError as e:
            raise UserError(
                f"cannot open {path} as MATLAB v7.3/HDF5 ({e}): download nyu_depth_v2_labeled.mat again"
            ) from None
        _OPEN_FILES[key] = handle
    return handle


def check_labeled_file(path: str, raw_depth: bool = False) -> int:
    """Validate the labelled .mat file's variables and shapes; return the number of images."""
    import h5py

    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist: download nyu_depth_v2_labeled.mat (2.8 GB) from the NYU site")
    if not h5py.is_hdf5(path):
        raise UserError(f"{path} is not MATLAB v7.3 (HDF5): pass nyu_depth_v2_labeled.mat, not splits.mat or a v5 file")
    with h5py.File(path, "r") as f:
        names = ["images", "depths", "labels"] + (["rawDepths"] if raw_depth else [])
        missing = [n for n in names if n not in f]
        if missing:
            raise UserError(f"{path} lacks {', '.join(missing)}: is it nyu_depth_v2_labeled.mat?")
        num, channels, width, height = f["images"].shape
        if channels != 3:
            raise UserError(f"{path}: images has shape {f['images'].shape}, expected (N, 3, W, H) as h5py reads it")
        for name in names[1:]:
            if f[name].shape != (num, width, height):
                raise UserError(
                    f"{path}: {name} has shape {f[name].shape} but images imply {(num, width, height)}: "
                    "the file is truncated or not the labelled NYUD-v2 set"
                )
    return int(num)


def read_split_indices(path: str, split: str, num_images: int) -> list[int]:
    """The sorted 1-based indices of `split` from splits.mat, checked to lie in 1..num_images."""
    import scipy.io

    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist: it is splits.mat from the NYU Depth V2 toolbox")
    try:
        data = scipy.io.loadmat(path)
    except (NotImplementedError, ValueError, OSError) as e:
        raise UserError(f"cannot read {path} as a MATLAB v5 file ({e}): pass the toolbox's splits.mat") from None
    indices = {}
    for name, var in _SPLIT_VARIABLES.items():
        if var not in data:
            raise UserError(f"{path} lacks the variable {var}: pass the toolbox's splits.mat")
        indices[name] = np.asarray(data[var]).astype(np.int64).ravel()
    for name, values in indices.items():
        if values.size and (values.min() < 1 or values.max() > num_images):
            raise UserError(
                f"{path}: {_SPLIT_VARIABLES[name]} holds indices {values.min()}..{values.max()} outside 1..{num_images} "
                "(the images of the labelled .mat file): the files do not belong together"
            )
    overlap = np.intersect1d(indices["train"], indices["test"])
    if overlap.size:
        raise UserError(f"{path}: image {int(overlap[0])} is in both trainNdxs and testNdxs")
    return sorted(int(i) for i in indices[split])


def read_class_map(path: str) -> bytes:
    """classMapping40.mat -> lookup NYU label (0..894) -> train id (uint8 bytes; 255 for unlabelled)."""
    import scipy.io

    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist: it is classMapping40.mat (Gupta et al. 2013)")
    try:
        map_class = np.asarray(scipy.io.loadmat(path)["mapClass"]).ravel()
    except KeyError:
        raise UserError(f"{path} lacks the variable mapClass: pass classMapping40.mat") from None
    except (NotImplementedError, ValueError, OSError) as e:
        raise UserError(f"cannot read {path} as a MATLAB v5 file ({e}): pass classMapping40.mat") from None
    if map_class.size != NUM_NYU_LABELS or map_class.min() < 1 or map_class.max() > len(NYU40_CLASSES):
        raise UserError(
            f"{path}: mapClass must hold {NUM_NYU_LABELS} values in 1..40 (got {map_class.size} values "
            f"in {map_class.min()}..{map_class.max()}): pass the 40-class mapping"
        )
    lut = np.full(NUM_NYU_LABELS + 1, 255, dtype=np.uint8)
    lut[1:] = map_class.astype(np.int64) - 1
    return lut.tobytes()


def load_image(job: NyudImage, label_to_train_id: bytes) -> dict:
    """One image of the labelled set as a sample dict (docs/contracts.md)."""
    f = _labeled_file(job.mat)
    i = job.index - 1
    rgb = np.ascontiguousarray(f["images"][i].transpose(2, 1, 0), dtype=np.uint8)
    labels = np.ascontiguousarray(f["labels"][i].T)
    depth = np.ascontiguousarray(f["rawDepths" if job.depth == "raw" else "depths"][i].T, dtype=np.float32)
    if labels.size and int(labels.max()) > NUM_NYU_LABELS:
        raise UserError(
            f"{job.mat}: image {job.index} holds label {int(labels.max())}, above the {NUM_NYU_LABELS} NYU labels: "
            "the file is not the official labelled set"
        )
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    lut = np.frombuffer(label_to_train_id, dtype=np.uint8)
    height, width = rgb.shape[:2]
    return {
        "key": f"nyud_{job.index:04d}",
        "rgb": rgb,
        "semantic": lut[labels.astype(np.int64)],
        "depth": depth,
        "instances": None,
        "camera": nyu_camera(height, width),
        "meta": {"dataset": "nyud", "index": job.index, "depth": job.depth, "file": os.path.basename(job.mat)},
    }


def dataset_info():
    from padnet_dist.data.writer import DatasetInfo

    return DatasetInfo(
        name="nyud",
        classes=list(NYU40_CLASSES),
        palette=nyu40_palette(),
        ignore_index=255,
        camera_defaults=nyu_camera(),
    )


@dataclass(frozen=True)
class NyudOptions:
    """The three official files (``mat``: nyu_depth_v2_labeled.mat, ``splits``: splits.mat, ``class_map``:
    classMapping40.mat), the ``split`` (train: 795 images, test: 654) and whether to take the raw Kinect depth
    (holes invalid) instead of the in-painted one."""

    mat: str
    splits: str
    class_map: str
    split: str
    raw_depth: bool = False


def plan(options: NyudOptions) -> Conversion:
    """The images of ``options.split``, every file checked; a one-line UserError naming a bad file."""
    if options.split not in SPLITS:
        raise UserError(f"NYUD split '{options.split}' is not one of {', '.join(SPLITS)}")
    mat = os.path.abspath(options.mat)
    num_images = check_labeled_file(mat, raw_depth=options.raw_depth)
    indices = read_split_indices(options.splits, options.split, num_images)
    if not indices:
        raise UserError(f"{options.splits}: split '{options.split}' is empty")
    lut = read_class_map(options.class_map)
    depth = "raw" if options.raw_depth else "inpainted"
    return Conversion(
        jobs=[NyudImage(mat, index, depth) for index in indices],
        load=functools.partial(load_image, label_to_train_id=lut),
        info=dataset_info(),
        source=f"NYUD-v2 {options.split} ({len(indices)} images from {mat})",
    )


OPTIONS = NyudOptions
