"""Cityscapes (gtFine) from the official directory layout to samples.

Inputs per frame ``{city}_{seq:06d}_{frame:06d}`` of ``{root}/{type}/{split}/{city}/``:
``leftImg8bit`` (8-bit RGB PNG), ``gtFine`` ``_labelIds.png`` (8-bit label ids 0..33) and ``_instanceIds.png``
(16-bit), ``disparity`` (16-bit PNG) and ``camera`` (JSON). Outputs:
    semantic  train ids through the official table (``cityscapes_labels.ID_TO_TRAIN_ID``), others 255;
    depth     metres = baseline * fx / d with d = (p - 1) / 256 for p > 1; p = 0 (no match) and p = 1 (d = 0,
              infinitely far) are invalid (0). baseline and fx come from *each frame's* camera file;
    instances label_id * 1000 + k for instance classes, the plain label id elsewhere (int32);
    camera    fx, fy, cx = u0, cy = v0, baseline (metres), at the files' resolution (nothing assumes 2048x1024).
Label value 255 in a labelIds image is accepted as ignore (license plate, id -1, wrapped to 8 bits); any other
value above 33 is an error, as it means the wrong file (a colour or train-id image) was put in place.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from padnet_dist.data.converters import Conversion
from padnet_dist.errors import UserError

SUMMARY = "Cityscapes gtFine from its official layout"
SPLITS = ("train", "val")
MAX_LABEL_ID = 33
LICENSE_PLATE_8BIT = 255  # id -1 as stored in an 8-bit image
_KINDS = {
    "rgb": ("leftImg8bit", "leftImg8bit.png"),
    "label_ids": ("gtFine", "gtFine_labelIds.png"),
    "instance_ids": ("gtFine", "gtFine_instanceIds.png"),
    "disparity": ("disparity", "disparity.png"),
    "camera": ("camera", "camera.json"),
}
_PACKAGES = {
    "leftImg8bit": "leftImg8bit_trainvaltest.zip",
    "gtFine": "gtFine_trainvaltest.zip",
    "disparity": "disparity_trainvaltest.zip",
    "camera": "camera_trainvaltest.zip",
}


@dataclass(frozen=True)
class CityscapesFrame:
    """One frame: ``{root}/{type}/{split}/{city}/{stem}_{suffix}`` for each input type. Picklable job."""

    root: str
    split: str
    city: str
    stem: str  # e.g. aachen_000000_000019

    def __repr__(self) -> str:  # stable (the writer fingerprints shards by it) and short in error messages
        return f"{self.stem} ({self.split} of {self.root})"

    def path(self, kind: str) -> str:
        folder, suffix = _KINDS[kind]
        return os.path.join(self.root, folder, self.split, self.city, f"{self.stem}_{suffix}")


def list_frames(root: str | os.PathLike, split: str) -> list[CityscapesFrame]:
    """Every frame of `split` with all five input files present, sorted by city and name.

    A frame missing any file raises one UserError naming the first missing file and the archive to unpack.
    """
    root = str(root)
    if split not in SPLITS:
        raise UserError(f"Cityscapes split '{split}' is not one of {', '.join(SPLITS)} (test labels are not public)")
    images_dir = Path(root, "leftImg8bit", split)
    if not images_dir.is_dir():
        raise UserError(f"{images_dir} does not exist: unpack {_PACKAGES['leftImg8bit']} into {root}")
    frames = [
        CityscapesFrame(root, split, path.parent.name, path.name[: -len("_leftImg8bit.png")])
        for path in sorted(images_dir.glob("*/*_leftImg8bit.png"))
    ]
    if not frames:
        raise UserError(f"no *_leftImg8bit.png under {images_dir}/<city>/: is {root} the Cityscapes directory?")
    for frame in frames:
        for kind in ("label_ids", "instance_ids", "disparity", "camera"):
            path = frame.path(kind)
            if not os.path.isfile(path):
                folder = _KINDS[kind][0]
                num_missing = sum(not os.path.isfile(f.path(kind)) for f in frames)
                raise UserError(
                    f"missing {path} ({num_missing} of {len(frames)} {split} frames lack their {folder} file): "
                    f"unpack {_PACKAGES[folder]} into {root}"
                )
    return frames


def _open_png(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGBA", "P", "LA") and path.endswith("leftImg8bit.png"):
                img = img.convert("RGB")
            return np.asarray(img)
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"cannot read {path} ({e}): re-extract it from the Cityscapes archive") from None


def _read_uint16(path: str) -> np.ndarray:
    """A 16-bit PNG as uint16 (Pillow gives mode I;16 -> uint16, or mode I -> int32 on older versions)."""
    array = _open_png(path)
    if array.ndim != 2 or array.dtype not in (np.uint16, np.int32) or (array.size and array.min() < 0):
        raise UserError(f"{path} is not a 16-bit single-channel PNG ({array.dtype} {array.shape})")
    if array.size and array.max() > 65535:
        raise UserError(f"{path} holds values above 65535: not a 16-bit PNG")
    return array.astype(np.uint16)


def _read_camera(path: str) -> dict[str, float]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        intr, extr = data["intrinsic"], data["extrinsic"]
        camera = {"fx": intr["fx"], "fy": intr["fy"], "cx": intr["u0"], "cy": intr["v0"], "baseline": extr["baseline"]}
        camera = {k: float(v) for k, v in camera.items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(
            f"{path} is not a Cityscapes camera file (need intrinsic.fx/fy/u0/v0 and extrinsic.baseline; "
            f"{type(e).__name__}: {e}): re-extract it from {_PACKAGES['camera']}"
        ) from None
    if camera["fx"] <= 0 or camera["baseline"] <= 0:
        raise UserError(
            f"{path}: fx and baseline must be positive, got fx={camera['fx']} baseline={camera['baseline']}"
        )
    return camera


def disparity_to_depth(raw: np.ndarray, baseline_m: float, fx_px: float) -> np.ndarray:
    """16-bit disparity PNG values (H, W) -> depth in metres float32 (H, W); 0 where invalid (p <= 1)."""
    raw = raw.astype(np.float64)
    valid = raw > 1
    depth = np.zeros(raw.shape, dtype=np.float64)
    depth[valid] = baseline_m * fx_px / ((raw[valid] - 1.0) / 256.0)
    return depth.astype(np.float32)


def load_frame(frame: CityscapesFrame) -> dict:
    """Read one frame's five files into a sample dict (docs/contracts.md); UserError naming a bad file."""
    from padnet_dist.data.cityscapes_labels import ID_TO_TRAIN_ID

    rgb = _open_png(frame.path("rgb"))
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise UserError(f"{frame.path('rgb')} is not an 8-bit RGB PNG ({rgb.dtype} {rgb.shape})")
    size = rgb.shape[:2]
    label_ids = _open_png(frame.path("label_ids"))
    if label_ids.ndim != 2 or label_ids.dtype != np.uint8:
        raise UserError(
            f"{frame.path('label_ids')} is not an 8-bit single-channel PNG ({label_ids.dtype} {label_ids.shape})"
        )
    instance_ids = _read_uint16(frame.path("instance_ids"))
    disparity = _read_uint16(frame.path("disparity"))
    for kind, array in (("label_ids", label_ids), ("instance_ids", instance_ids), ("disparity", disparity)):
        if array.shape != size:
            raise UserError(
                f"{frame.path(kind)} is {array.shape[1]}x{array.shape[0]} but its image {frame.path('rgb')} is "
                f"{size[1]}x{size[0]}: the files do not belong together"
            )
    unknown = np.unique(label_ids[(label_ids > MAX_LABEL_ID) & (label_ids != LICENSE_PLATE_8BIT)])
    if unknown.size:
        raise UserError(
            f"{frame.path('label_ids')} holds label id {int(unknown[0])}, not a Cityscapes id (0..{MAX_LABEL_ID}): "
            "use the *_gtFine_labelIds.png files, not the colour or train-id images"
        )
    camera = _read_camera(frame.path("camera"))
    return {
        "key": frame.stem,
        "rgb": rgb,
        "semantic": ID_TO_TRAIN_ID[label_ids],
        "depth": disparity_to_depth(disparity, camera["baseline"], camera["fx"]),
        "instances": instance_ids.astype(np.int32),
        "camera": camera,
        "meta": {
            "dataset": "cityscapes",
            "split": frame.split,
            "city": frame.city,
            "files": {kind: os.path.relpath(frame.path(kind), frame.root) for kind in _KINDS},
        },
    }


def dataset_info():
    """Train classes, palette and ignore index of Cityscapes (for the manifest)."""
    from padnet_dist.data.cityscapes_labels import TRAIN_CLASS_NAMES, TRAIN_PALETTE
    from padnet_dist.data.writer import DatasetInfo

    return DatasetInfo(
        name="cityscapes", classes=list(TRAIN_CLASS_NAMES), palette=list(TRAIN_PALETTE), ignore_index=255
    )


@dataclass(frozen=True)
class CityscapesOptions:
    """``root``: the directory holding leftImg8bit/, gtFine/, disparity/, camera/; ``split``: train or val."""

    root: str
    split: str


def plan(options: CityscapesOptions) -> Conversion:
    """The frames of ``options.split``, every input file checked present; a one-line UserError otherwise."""
    if not os.path.isdir(options.root):
        raise UserError(
            f"Cityscapes root {options.root} is not a directory: point it at the unpacked Cityscapes dataset"
        )
    frames = list_frames(options.root, options.split)
    return Conversion(
        jobs=frames, load=load_frame, info=dataset_info(), source=f"Cityscapes {options.split} ({options.root})"
    )


OPTIONS = CityscapesOptions
