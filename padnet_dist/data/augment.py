"""Training augmentation (paper §4.1): random scale, random crop, horizontal flip; one geometry for all maps.

Per sample, deterministic: the parameters are drawn from an RNG seeded with ``(seed, epoch, position)`` so
a resumed epoch reproduces them. The transform is one geometry (scale, then crop window, then flip) evaluated only
over the source window the crop reads, so a 1.75x scale of a 1024x2048 image never materialises the 1792x3584
intermediate. Pixel centres are at integer coordinates: a pixel ``x`` of the source lands at ``(x + 0.5) * s - 0.5``
in the scaled image.

rgb is resized bilinearly by torch's uint8 kernel (within one grey level of the exact value), labels and instances
with nearest neighbour, depth bilinearly in float32 only where all four neighbours are valid and with nearest
neighbour elsewhere (so invalid zeros never blend into valid depth). Outside the source image: rgb 0 after
normalisation, semantic ``ignore_index``, depth 0, instances -1. Derived targets (normals, contours) are computed
afterwards from the transformed maps.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

CAMERA_FIELDS = ("fx", "fy", "cx", "cy", "baseline")  # baseline (metres) only for stereo datasets
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AugmentParams:
    """One sample's geometry: scale ratio, crop window corner in the scaled image (may be negative = pad)."""

    scale: float
    top: int
    left: int
    flip: bool


def sample_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """The RNG of one sample of one epoch; ``position`` is its global sequence position."""
    return np.random.default_rng([seed, epoch, position, 0xA06])


def draw_params(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    scales: Sequence[float],
    crop_height: int,
    crop_width: int,
    flip_prob: float,
) -> AugmentParams:
    """Random scale from ``scales``, crop corner uniform over the valid range, flip with ``flip_prob``.

    When the scaled image is smaller than the crop, the corner is negative so the image lands at a random
    place inside the (padded) crop.
    """
    scale = float(scales[int(rng.integers(len(scales)))])
    scaled_h, scaled_w = scaled_size(height, width, scale)
    top = int(rng.integers(min(0, scaled_h - crop_height), max(0, scaled_h - crop_height) + 1))
    left = int(rng.integers(min(0, scaled_w - crop_width), max(0, scaled_w - crop_width) + 1))
    flip = bool(rng.random() < flip_prob)
    return AugmentParams(scale=scale, top=top, left=left, flip=flip)


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(1, round(height * scale)), max(1, round(width * scale))


def _window(src: torch.Tensor, size: int) -> tuple[int, int]:
    """The source index range [lo, hi) that sampling at coordinates ``src`` (clamped into the image, as border
    padding does) reads, with one pixel of margin either side for rounding."""
    lo = int(torch.floor(src.min().clamp(0, size - 1))) - 1
    hi = int(torch.floor(src.max().clamp(0, size - 1))) + 3
    return max(0, lo), min(size, hi)


def _nearest(src: torch.Tensor, size: int) -> np.ndarray:
    """Source indices nearest to coordinates ``src`` (float64), clamped into the image as border padding does."""
    return torch.round(src.clamp(0, size - 1)).long().numpy()


def _tensor(array: np.ndarray, dtype: Any = None) -> torch.Tensor:
    """A tensor sharing ``array`` when it is writable (decoded PIL images are not: those are copied)."""
    array = np.asarray(array, dtype=dtype)
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array, order="C")
    return torch.from_numpy(array)


_RGB_MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1) * 255.0
_RGB_STD = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1) * 255.0


def normalise_rgb(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 or 0..255 float (3, H, W) -> ImageNet-normalised float32 (3, H, W)."""
    return (rgb.float() - _RGB_MEAN) / _RGB_STD


def _inside(offset: int, crop: int, scaled: int, flip: bool = False) -> tuple[int, int]:
    """The output index range [lo, hi) of a crop axis that lies inside the scaled image (the rest is padding)."""
    lo, hi = max(0, -offset), max(0, min(crop, scaled - offset))
    return (crop - hi, crop - lo) if flip else (lo, hi)


def _fill_outside(t: torch.Tensor, rows: tuple[int, int], cols: tuple[int, int], value: float) -> torch.Tensor:
    """Set the (..., h, w) tensor ``t`` to ``value`` outside ``rows x cols``, in place (usually nothing is outside)."""
    t[..., : rows[0], :] = value
    t[..., rows[1] :, :] = value
    t[..., :, : cols[0]] = value
    t[..., :, cols[1] :] = value
    return t


def _source_span(lo: int, hi: int, size: int, scaled: int) -> tuple[int, int, int, int]:
    """The source range [s0, s1) that resizing an axis of ``size`` pixels to ``scaled`` reads for the scaled range
    [lo, hi), widened to multiples of the resize's period q = size / gcd(size, scaled), and its scaled range
    [s0 * scaled / size, s1 * scaled / size): resizing only [s0, s1) to that length puts every pixel on the whole
    resize's grid (q source pixels are exactly scaled / gcd resized ones). Returns (s0, s1, scaled s0, scaled s1).
    Cityscapes' and NYUv2's scales have periods of 2-5 pixels; a ratio without a common divisor (1024 -> 1331) has
    the whole axis as its period: still exact, but then the whole axis is resized."""
    period = size // math.gcd(size, scaled)
    s0 = max(0, (math.floor((lo + 0.5) * size / scaled - 0.5) - 1) // period * period)
    s1 = min(size, -(-(math.floor((hi - 0.5) * size / scaled - 0.5) + 3) // period) * period)
    return s0, s1, s0 * scaled // size, s1 * scaled // size


def _resize_rgb(
    rgb: np.ndarray,
    params: AugmentParams,
    scaled_size_hw: tuple[int, int],
    crop_size_hw: tuple[int, int],
    inside: tuple[tuple[int, int], tuple[int, int]],
) -> torch.Tensor:
    """uint8 (H, W, 3) -> the normalised float32 (3, h, w) crop, 0 outside the scaled image: torch's uint8 bilinear
    resize (align_corners=False) of just the source window the crop reads, cropped and flipped.

    The uint8 kernel (separable, fixed-point weights, channels-last) costs a tenth of a float32 ``grid_sample``; each
    of its two passes rounds to a whole level, so the result is within 1 grey level of the exact bilinear value
    (tests/data/test_augment.py), as in any uint8 image pipeline.
    """
    (scaled_h, scaled_w), (crop_h, crop_w) = scaled_size_hw, crop_size_hw
    (out_r0, out_r1), (out_c0, out_c1) = inside
    out = torch.empty(3, crop_h, crop_w, dtype=torch.float32)
    if out_r0 >= out_r1 or out_c0 >= out_c1:
        return out.zero_()
    rows = params.top + out_r0, params.top + out_r1  # the scaled image's rows and columns the crop shows
    cols = max(params.left, 0), min(params.left + crop_w, scaled_w)
    y0, y1, scaled_y0, scaled_y1 = _source_span(*rows, rgb.shape[0], scaled_h)
    x0, x1, scaled_x0, scaled_x1 = _source_span(*cols, rgb.shape[1], scaled_w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's arrays are read-only: the view is only read, by the copy below
        window = torch.from_numpy(np.asarray(rgb)[y0:y1, x0:x1]).permute(2, 0, 1).unsqueeze(0)
    window = window.contiguous(memory_format=torch.channels_last)
    resized = F.interpolate(window, size=(scaled_y1 - scaled_y0, scaled_x1 - scaled_x0), mode="bilinear",
                            align_corners=False, antialias=False)[0]  # fmt: skip
    region = resized[:, rows[0] - scaled_y0 : rows[1] - scaled_y0, cols[0] - scaled_x0 : cols[1] - scaled_x0]
    if params.flip:
        region = region.flip(-1)
    target = out[:, out_r0:out_r1, out_c0:out_c1]
    torch.sub(region, _RGB_MEAN, out=target).div_(_RGB_STD)  # normalise_rgb's arithmetic, into the crop
    return _fill_outside(out, *inside, 0.0)


def augment_sample(
    sample: dict[str, Any],
    params: AugmentParams,
    *,
    crop_height: int,
    crop_width: int,
    divide_depth_by_scale: bool,
    ignore_index: int,
    min_depth_m: float = 0.0,
    max_depth_m: float = 0.0,
) -> dict[str, Any]:
    """Apply ``params`` to a decoded sample (see ``data.format.decode_sample``).

    Returns ``rgb`` float32 (3, h, w) normalised, ``semantic`` int64 (h, w), ``depth`` float32 (1, h, w)
    metres (divided by the scale when ``divide_depth_by_scale``), ``instances`` int64 (h, w) or None,
    ``camera`` dict (fx, fy, cx, cy, and baseline when the sample has one) for the output pixels, with
    ``h, w = crop_height, crop_width``. With ``divide_depth_by_scale`` the scene is treated as shrunk by the scale
    (depth / s), stereo rig included (baseline / s), so baseline * fx / depth is the disparity of the resized image:
    s times the source's, as resizing by s scales any disparity, with or without dividing depth.
    Source depth is valid where ``min_depth_m < depth`` and, when ``max_depth_m > 0``, ``depth < max_depth_m``
    (non-finite never): the rest counts as a hole (0), as if it had been zeroed before augmentation.
    """
    height, width = sample["semantic"].shape
    scaled_h, scaled_w = scaled_size(height, width, params.scale)
    sy, sx = scaled_h / height, scaled_w / width

    # Output column j of the crop shows scaled column left + j (or its mirror), i.e. source (x' + 0.5)/sx - 0.5.
    cols = torch.arange(crop_width, dtype=torch.float64)
    if params.flip:
        cols = crop_width - 1 - cols
    src_x = (cols + params.left + 0.5) / sx - 0.5
    src_y = (torch.arange(crop_height, dtype=torch.float64) + params.top + 0.5) / sy - 0.5
    # Only the source window the crop reads is resampled (a 640 crop of a 1024x2048 image at scale 1.75 reads
    # 366x366 pixels): bilinear reads floor(x) and floor(x) + 1, nearest their neighbourhood.
    y0, y1 = _window(src_y, height)
    x0, x1 = _window(src_x, width)
    # per-axis coordinates in float64, the (h, w, 2) grid built in float32 (grid_sample's precision anyway)
    grid_x = ((2 * (src_x - x0) + 1) / (x1 - x0) - 1).float().view(1, -1).expand(crop_height, -1)
    grid_y = ((2 * (src_y - y0) + 1) / (y1 - y0) - 1).float().view(-1, 1).expand(-1, crop_width)
    grid = torch.stack([grid_x, grid_y], dim=-1).unsqueeze(0)  # (1, h, w, 2)
    # The crop's rows x cols inside the scaled image (the crop may hang over its border when padding).
    inside = _inside(params.top, crop_height, scaled_h), _inside(params.left, crop_width, scaled_w, params.flip)

    def window(array: np.ndarray) -> np.ndarray:
        return np.asarray(array)[y0:y1, x0:x1]

    def resample(image: torch.Tensor, mode: str) -> torch.Tensor:
        # border padding: every output pixel inside the scaled image samples real source pixels; outside is masked.
        # (A separable gather-and-lerp in torch measured slower: gathers along a non-leading axis cost more
        # than grid_sample's whole pass; float32 interpolate of an aligned window, as rgb's, too.)
        return F.grid_sample(image.unsqueeze(0), grid, mode=mode, padding_mode="border", align_corners=False)[0]

    # Nearest neighbour (labels, and depth where a bilinear weight falls on a hole) is an index gather on the stored
    # dtype, rows then columns of the window (3x faster than numpy's fancy indexing by np.ix_): the pixel
    # grid_sample's nearest mode would pick (the clamped coordinate rounded half to even).
    rows_nearest, cols_nearest = _nearest(src_y, height) - y0, _nearest(src_x, width) - x0

    def gather(array_window: np.ndarray) -> np.ndarray:
        return array_window.take(rows_nearest, axis=0).take(cols_nearest, axis=1)

    rgb = _resize_rgb(sample["rgb"], params, (scaled_h, scaled_w), (crop_height, crop_width), inside)

    # Holes are NaN for the bilinear pass: a NaN neighbour, even one of weight 0, makes the output NaN, and there
    # the nearest pixel is taken instead, so invalid zeros never blend into valid depth.
    depth = window(sample["depth"])
    valid = depth > min_depth_m
    if max_depth_m > 0:
        valid &= depth < max_depth_m
    holes = np.where(valid, depth, np.float32(np.nan)).astype(np.float32, copy=False)
    depth_out = resample(torch.from_numpy(holes)[None], "bilinear")
    nearest = torch.from_numpy(gather(holes)).nan_to_num_(nan=0.0, posinf=math.inf, neginf=-math.inf)
    depth_out = torch.where(depth_out.isnan(), nearest[None], depth_out)
    if divide_depth_by_scale:
        depth_out.div_(params.scale)
    _fill_outside(depth_out, *inside, 0.0)

    def labels(array: np.ndarray, outside_value: int) -> torch.Tensor:
        return _fill_outside(torch.from_numpy(gather(window(array)).astype(np.int64)), *inside, outside_value)

    semantic = labels(sample["semantic"], ignore_index)
    instances = None if sample.get("instances") is None else labels(sample["instances"], -1)

    camera = sample["camera"]
    cx = (camera["cx"] + 0.5) * sx - 0.5 - params.left
    if params.flip:
        cx = crop_width - 1 - cx
    out_camera = {
        "fx": camera["fx"] * sx,
        "fy": camera["fy"] * sy,
        "cx": cx,
        "cy": (camera["cy"] + 0.5) * sy - 0.5 - params.top,
    }
    if "baseline" in camera:
        out_camera["baseline"] = camera["baseline"] / params.scale if divide_depth_by_scale else camera["baseline"]
    return {"rgb": rgb, "semantic": semantic, "depth": depth_out, "instances": instances, "camera": out_camera}


def prepare_eval_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """No augmentation: the same fields as ``augment_sample`` at the sample's own resolution."""
    rgb = _tensor(sample["rgb"]).permute(2, 0, 1)
    instances = sample.get("instances")
    return {
        "rgb": normalise_rgb(rgb),
        "semantic": _tensor(sample["semantic"], np.int64),
        "depth": _tensor(sample["depth"], np.float32)[None],
        "instances": None if instances is None else _tensor(instances, np.int64),
        "camera": {k: float(v) for k, v in sample["camera"].items() if k in CAMERA_FIELDS},
    }
