"""The shard sample format: one sample = a few tar members sharing a key (see shards/README.md).

``encode_sample(sample) -> {suffix: bytes}`` and ``decode_sample({suffix: bytes}, key) -> sample`` are exact
inverses for every member: rgb (PNG) and labels are lossless, depth is float32 bit-exact.
A decoded sample (docs/contracts.md):
    key: str; rgb uint8 (H, W, 3); semantic uint8 (H, W) train ids, 255 = ignore;
    depth float32 (H, W) metres, 0 = invalid; instances int32 (H, W) label_id*1000+k, or None;
    camera dict (fx, fy, cx, cy in pixels at this resolution, 0-based pixel centres); meta dict.
"""

from __future__ import annotations

import io
import json
import re
import struct
import tarfile
import warnings
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np

from padnet_dist.errors import UserError

FORMAT_VERSION = 1
RGB_FORMATS = {"png": "rgb.png", "jpeg": "rgb.jpg"}
DEPTH_SUFFIX = "depth.f32z"
MEMBER_ORDER = ("rgb", "semantic", "depth", "instances", "camera", "meta")  # the kinds of a sample, decoding order
CAMERA_KEYS = ("fx", "fy", "cx", "cy")
JPEG_QUALITY = 95
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*$")

# depth.f32z: magic, filter (0 raw bytes, 1 byte-shuffled), height, width, then zlib-compressed float32 LE.
_DEPTH_MAGIC = b"PDZ1"
_DEPTH_HEADER = struct.Struct("<4sBII")


class CorruptSample(UserError):
    """A tar member that cannot be decoded; the message names the key and member."""


def check_key(key: str) -> str:
    """Keys name tar members: no dots (WebDataset splits member names at the first dot), no spaces."""
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise UserError(
            f"invalid sample key {key!r}: use letters, digits, '_', '-' (and '/' between parts), no dots or spaces"
        )
    return key


def member_kind(suffix: str) -> str:
    """``"rgb.png"`` -> ``"rgb"``."""
    return suffix.split(".", 1)[0]


# -- encoding ------------------------------------------------------------------------------------------------
def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buf.getvalue()


def encode_depth(depth_m: np.ndarray) -> bytes:
    """float32 (H, W) -> ``depth.f32z`` bytes. Both filters are tried and the smaller kept: depth from quantised
    disparity (Cityscapes) compresses best as raw bytes, noisy floats (NYU) best byte-shuffled."""
    depth_m = np.ascontiguousarray(depth_m, dtype="<f4")
    height, width = depth_m.shape
    raw = zlib.compress(depth_m.tobytes(), 6)
    shuffled = zlib.compress(np.ascontiguousarray(depth_m.view(np.uint8).reshape(-1, 4).T).tobytes(), 6)
    flt, payload = (0, raw) if len(raw) <= len(shuffled) else (1, shuffled)
    return _DEPTH_HEADER.pack(_DEPTH_MAGIC, flt, height, width) + payload


def decode_depth(data: bytes) -> np.ndarray:
    """``depth.f32z`` bytes -> float32 (H, W) metres. ValueError when malformed."""
    if len(data) < _DEPTH_HEADER.size:
        raise ValueError("too short for a depth header")
    magic, flt, height, width = _DEPTH_HEADER.unpack_from(data)
    if magic != _DEPTH_MAGIC or flt not in (0, 1):
        raise ValueError("not a padnet depth.f32z member")
    raw = zlib.decompress(data[_DEPTH_HEADER.size :])
    if len(raw) != 4 * height * width:
        raise ValueError(f"{len(raw)} bytes do not hold a {height}x{width} float32 map")
    array = np.frombuffer(raw, dtype="<f4")
    if flt == 1:  # plane k holds byte k of every float: one strided write per plane, 2.7x faster than .T.copy()
        planes = np.frombuffer(raw, dtype=np.uint8).reshape(4, -1)
        interleaved = np.empty((height * width, 4), dtype=np.uint8)
        for k in range(4):  # over the 4 bytes of a float, not over pixels
            interleaved[:, k] = planes[k]
        array = interleaved.view("<f4").reshape(-1)
    return array.reshape(height, width).astype(np.float32, copy=False)


def _check_array(key: str, name: str, array: Any, dtype: Any, ndim: int) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise UserError(f"sample {key}: {name} must be a numpy array, got {type(array).__name__}")
    if array.ndim != ndim or (ndim == 3 and array.shape[2] != 3):
        want = "(H, W, 3)" if ndim == 3 else "(H, W)"
        raise UserError(f"sample {key}: {name} has shape {array.shape}, expected {want}")
    if array.dtype != dtype:
        raise UserError(f"sample {key}: {name} has dtype {array.dtype}, expected {np.dtype(dtype)}")
    return array


def encode_sample(sample: dict, rgb_format: str = "png") -> dict[str, bytes]:
    """A sample dict (contract above; ``instances`` may be missing or None) -> ``{member suffix: bytes}``.

    Validates shapes (rgb, semantic, depth, instances agree in (H, W)), dtypes, the instance id range
    (must fit 16 bits) and the camera keys; a violation is a UserError naming the key.
    """
    key = check_key(sample.get("key"))
    if rgb_format not in RGB_FORMATS:
        raise UserError(f"rgb_format '{rgb_format}' is not one of {', '.join(RGB_FORMATS)}")
    missing = [name for name in ("rgb", "semantic", "depth", "camera") if sample.get(name) is None]
    if missing:
        raise UserError(f"sample {key}: missing {', '.join(missing)}")
    rgb = _check_array(key, "rgb", sample["rgb"], np.uint8, 3)
    semantic = _check_array(key, "semantic", sample["semantic"], np.uint8, 2)
    depth = _check_array(key, "depth", sample["depth"], np.float32, 2)
    shapes = {"rgb": rgb.shape[:2], "semantic": semantic.shape, "depth": depth.shape}
    instances = sample.get("instances")
    if instances is not None:
        if not isinstance(instances, np.ndarray) or instances.dtype.kind not in "iu":
            raise UserError(f"sample {key}: instances must be an integer numpy array")
        instances = _check_array(key, "instances", instances, instances.dtype, 2)
        shapes["instances"] = instances.shape
    if len(set(shapes.values())) != 1:
        raise UserError(f"sample {key}: sizes disagree ({', '.join(f'{k} {v}' for k, v in shapes.items())})")
    if not np.isfinite(depth).all() or (depth < 0).any():
        raise UserError(f"sample {key}: depth must be finite and >= 0 metres (0 = invalid)")
    camera = dict(sample["camera"])
    absent = [k for k in CAMERA_KEYS if k not in camera]
    if absent:
        raise UserError(f"sample {key}: camera lacks {', '.join(absent)} (pixels at this image's resolution)")

    members = {RGB_FORMATS[rgb_format]: _png(rgb) if rgb_format == "png" else _jpeg(rgb)}
    members["semantic.png"] = _png(semantic)
    members[DEPTH_SUFFIX] = encode_depth(depth)
    if instances is not None:
        if instances.size and (instances.min() < 0 or instances.max() > 65535):
            raise UserError(
                f"sample {key}: instance ids span {instances.min()}..{instances.max()}, outside 0..65535 (16-bit PNG)"
            )
        members["instances.png"] = _png(instances.astype(np.uint16))
    try:
        members["camera.json"] = json.dumps(camera, sort_keys=True).encode()
        members["meta.json"] = json.dumps(dict(sample.get("meta") or {}), sort_keys=True).encode()
    except TypeError as e:
        raise UserError(f"sample {key}: camera/meta must be JSON-serialisable ({e})") from None
    return members


# -- decoding ------------------------------------------------------------------------------------------------
def _image(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return np.asarray(img)


def _rgb(suffix: str, data: bytes) -> np.ndarray:
    """rgb member -> uint8 (H, W, 3), with torchvision's libjpeg-turbo / libpng decoders: 15-20 % faster than
    Pillow's on a 1024x2048 image here (bench/loader_throughput.py). The array is an (H, W, 3) view of a
    channels-first buffer. Anything torchvision cannot read as 3-channel 8-bit goes through Pillow."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg, decode_png

    decode = decode_jpeg if suffix.endswith((".jpg", ".jpeg")) else decode_png if suffix.endswith(".png") else None
    if decode is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.frombuffer warns that bytes are read-only; nothing writes
                image = decode(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.UNCHANGED)
        except RuntimeError:
            image = None  # corrupt, or a variant torchvision refuses: Pillow decides (and names the error)
        if image is not None and image.dim() == 3 and image.shape[0] == 3 and image.dtype == torch.uint8:
            return image.permute(1, 2, 0).numpy()
    return _image(data)


def _decode_member(suffix: str, data: bytes) -> Any:
    kind = member_kind(suffix)
    if kind == "rgb":
        array = _rgb(suffix, data)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise ValueError(f"decoded to {array.dtype} {array.shape}, not uint8 (H, W, 3)")
        return array
    if kind == "semantic":
        array = _image(data)
        if array.ndim != 2 or array.dtype != np.uint8:
            raise ValueError(f"decoded to {array.dtype} {array.shape}, not uint8 (H, W)")
        return array
    if kind == "depth":
        return decode_depth(data)
    if kind == "instances":
        array = _image(data)
        if array.ndim != 2:
            raise ValueError(f"decoded to shape {array.shape}, not (H, W)")
        return array.astype(np.int32)
    if kind in ("camera", "meta"):
        value = json.loads(data)
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        return value
    raise ValueError("unknown member")


TRAINING_KINDS = ("rgb", "semantic", "depth", "camera")  # what augmentation and the training targets read


def decode_sample(members: dict[str, bytes], key: str, kinds: tuple[str, ...] = MEMBER_ORDER) -> dict:
    """``{member suffix: bytes}`` of one key -> a decoded sample (contract above).

    Only the members of ``kinds`` are decoded (the training loader passes ``TRAINING_KINDS``: instances and meta,
    a fifth of the decode time on Cityscapes-sized samples, are evaluation-only); the others are None / {}.
    Unknown suffixes are ignored (forward compatibility); a missing required member or one that does not decode
    raises ``CorruptSample`` naming the key and the member.
    """
    by_kind = {member_kind(s): s for s in members}
    sample: dict[str, Any] = {"key": key, "instances": None, "meta": {}}
    for kind in (k for k in MEMBER_ORDER if k in kinds):
        suffix = by_kind.get(kind)
        if suffix is None:
            if kind in ("instances", "meta"):
                continue
            raise CorruptSample(f"sample {key}: member '{kind}' is missing (have {', '.join(sorted(members))})")
        try:
            sample[kind] = _decode_member(suffix, members[suffix])
        except Exception as e:
            raise CorruptSample(f"sample {key}: member '{key}.{suffix}' is corrupt ({type(e).__name__}: {e})") from e
    size = sample["rgb"].shape[:2]
    for kind in ("semantic", "depth", "instances"):
        if sample[kind] is not None and sample[kind].shape != size:
            raise CorruptSample(f"sample {key}: member '{kind}' is {sample[kind].shape}, rgb is {size}")
    return sample


def iter_tar_samples(
    fileobj: BinaryIO, source: str = "shard", *, skip: int = 0
) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream ``(key, {suffix: bytes})`` from a tar stream, grouping consecutive members by key.

    The one tar reader of the package (the loader, ``shards inspect`` and the benchmarks all use it): WebDataset's
    tar iteration and grouping (a key is the member name up to the first dot of its last path component). The
    members of the first ``skip`` samples are passed over without being copied. A stream that is not a tar, breaks
    off or repeats a member raises ``CorruptSample`` naming ``source``; storage errors propagate unchanged.
    """
    from webdataset.tariterators import base_plus_ext, group_by_keys, tar_file_iterator

    sample_index, current_key = -1, None

    def wanted(fname: str) -> bool:
        nonlocal sample_index, current_key
        prefix, _ = base_plus_ext(fname)
        if prefix != current_key:
            current_key, sample_index = prefix, sample_index + 1
        return sample_index >= skip

    try:
        files = ({**f, "__url__": source} for f in tar_file_iterator(fileobj, select_files=wanted))
        for sample in group_by_keys(files):
            yield sample["__key__"], {k: v for k, v in sample.items() if not k.startswith("__")}
    except (tarfile.TarError, EOFError, ValueError) as e:
        detail = str(e).splitlines()[0].split(" @ ")[0] if str(e) else type(e).__name__  # webdataset adds " @ <stream>"
        raise CorruptSample(
            f"{source} is not a readable tar file ({detail}): rewrite it with `padnet-dist shard`"
        ) from e
