"""Turning predictions into images: colour maps, PNG encoders and the Cityscapes submission format.

Files written per image (``write_panels``), ``{name}`` being the sample key or the input file's stem:

- ``{name}_semantic.png``: RGB, each train id in its dataset colour, ignore (255) black.
- ``{name}_{kind}.png``: RGB, the depth prediction through a viridis-like colour map, near = bright, invalid black.
- ``{name}_{kind}16.png``: single-channel 16-bit, value = round(x * scale) + offset, 0 = invalid (``PNG16``):
  ``depth`` (metres): scale 256, offset 0; covers 1/256 m .. 255.996 m with a quantisation error of at most
  1/512 m, deeper values saturate. ``disparity`` (pixels): scale 256, offset 1, Cityscapes' own disparity encoding.
  ``inverse_depth`` (1/m): scale 16384, offset 0, up to 4 /m (0.25 m).
- ``{name}_panel.png``: input | semantic | depth, side by side.
``{kind}`` is the depth target the values are in: the checkpoint's ``data.depth_target``, or ``depth`` when they were
converted to metres. ``write_prediction_info`` records it, the unit and the encoding in ``predictions.json``.

``--format cityscapes`` writes instead what the benchmark server and ``eval-cityscapes`` read
(``write_cityscapes``): ``{city}_{seq}_{frame}_pred.png``, single-channel 8-bit label ids (train ids mapped back
with ``TRAIN_ID_TO_ID``), the size of the input image.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from padnet_dist.data.cityscapes_labels import train_ids_to_label_ids
from padnet_dist.errors import UserError
from padnet_dist.storage import join_url, storage_for

if TYPE_CHECKING:
    import torch

DEPTH_PNG_SCALE = 256.0  # value units per metre in the 16-bit depth PNG
PNG16 = {"depth": (256.0, 0), "disparity": (256.0, 1), "inverse_depth": (16384.0, 0)}  # (scale, offset)

# Viridis sampled at 9 evenly spaced points (the published map's key colours); linear in between.
_VIRIDIS_RGB = np.array(
    [
        [68, 1, 84],
        [72, 40, 120],
        [62, 73, 137],
        [49, 104, 142],
        [38, 130, 142],
        [31, 158, 137],
        [53, 183, 121],
        [110, 206, 88],
        [253, 231, 37],
    ],
    dtype=np.float64,
)

_CITYSCAPES_FRAME = re.compile(r"([A-Za-z]+(?:_[A-Za-z]+)*)_(\d{6})_(\d{6})")


def viridis(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (clipped; NaN -> 0) to RGB: float (...) -> uint8 (..., 3)."""
    v = np.nan_to_num(np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0))
    pos = v * (len(_VIRIDIS_RGB) - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), len(_VIRIDIS_RGB) - 2)
    frac = (pos - lo)[..., None]
    rgb = _VIRIDIS_RGB[lo] * (1.0 - frac) + _VIRIDIS_RGB[lo + 1] * frac
    return np.round(rgb).astype(np.uint8)


def colorize_depth(
    depth_m: np.ndarray,
    *,
    min_depth_m: float | None = None,
    max_depth_m: float | None = None,
    near_is_large: bool = False,
) -> np.ndarray:
    """Depth (H, W) metres -> RGB uint8 (H, W, 3); near is bright, pixels <= 0 or non-finite are black.

    The range defaults to the image's own valid minimum and maximum, so each picture uses the whole map.
    ``near_is_large`` for disparity and inverse depth, whose values grow toward the camera.
    """
    depth = np.asarray(depth_m, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    out = np.zeros(depth.shape + (3,), dtype=np.uint8)
    if not valid.any():
        return out
    lo = float(depth[valid].min()) if min_depth_m is None else float(min_depth_m)
    hi = float(depth[valid].max()) if max_depth_m is None else float(max_depth_m)
    span = max(hi - lo, 1e-6)
    share = (depth[valid] - lo) / span
    out[valid] = viridis(share if near_is_large else 1.0 - share)
    return out


def synthetic_palette(num_classes: int) -> np.ndarray:
    """Distinct colours for ``num_classes`` classes (uint8 (C, 3)), for datasets whose manifest has no palette.

    Hues step by the golden angle so neighbouring ids differ strongly.
    """
    hues = (np.arange(num_classes) * 0.618033988749895) % 1.0
    sat = np.where(np.arange(num_classes) % 2 == 0, 0.85, 0.6)
    val = np.where(np.arange(num_classes) % 3 == 2, 0.7, 0.95)
    i = np.floor(hues * 6).astype(int) % 6
    f = hues * 6 - np.floor(hues * 6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    table = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)]
    rgb = np.stack([np.choose(i, [row[c] for row in table]) for c in range(3)], axis=-1)
    return np.round(rgb * 255).astype(np.uint8)


def colorize_semantic(train_ids: np.ndarray, palette: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """Train ids (H, W) -> RGB uint8 (H, W, 3) via ``palette`` (C, 3); ids outside the palette (ignore) are black."""
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: min(len(pal), 255)] = pal[:255]
    ids = np.asarray(train_ids)
    return lut[np.clip(ids, 0, 255).astype(np.int64)]


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W) / (H, W, 3) or uint16 (H, W) -> PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def encode_depth_png16(depth_m: np.ndarray) -> bytes:
    """Depth (H, W) metres -> 16-bit PNG of round(depth * 256); invalid (<= 0, non-finite) -> 0.

    Valid depths below 1/256 m are stored as 1 so they stay distinguishable from invalid.
    """
    depth = np.asarray(depth_m, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    values = np.zeros(depth.shape, dtype=np.uint16)
    values[valid] = np.clip(np.round(depth[valid] * DEPTH_PNG_SCALE), 1, 65535).astype(np.uint16)
    return encode_png(values)


def encode_target_png16(values: np.ndarray, kind: str) -> bytes:
    """Depth-target values (H, W) in ``kind``'s unit -> 16-bit PNG of round(x * scale) + offset (``PNG16``);
    invalid (<= 0, non-finite) -> 0; valid values that would round to 0 are stored as 1."""
    scale, offset = PNG16[kind]
    x = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(x) & (x > 0)
    out = np.zeros(x.shape, dtype=np.uint16)
    out[valid] = np.clip(np.round(x[valid] * scale) + offset, 1, 65535).astype(np.uint16)
    return encode_png(out)


def decode_target_png16(data: bytes, kind: str) -> np.ndarray:
    """Inverse of ``encode_target_png16``: float32 (H, W) in ``kind``'s unit, 0 = invalid."""
    scale, offset = PNG16[kind]
    raw = _read_png16(data)
    return np.where(raw > offset, (raw - offset) / scale, 0.0).astype(np.float32)


def _read_png16(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    if image.mode not in ("I;16", "I", "I;16B", "L"):
        raise UserError(
            f"depth PNG has mode {image.mode}: expected a 16-bit single-channel PNG from 'padnet-dist predict'"
        )
    return np.asarray(image).astype(np.float64)


def decode_depth_png16(data: bytes) -> np.ndarray:
    """Inverse of ``encode_depth_png16``: float32 (H, W) metres, 0 = invalid."""
    return (_read_png16(data) / DEPTH_PNG_SCALE).astype(np.float32)


def side_by_side(*images: np.ndarray) -> np.ndarray:
    """RGB uint8 images of equal height -> one RGB uint8 image, left to right."""
    heights = {im.shape[0] for im in images}
    if len(heights) != 1:
        raise ValueError(f"panel images differ in height: {sorted(heights)}")
    return np.concatenate([im if im.ndim == 3 else np.repeat(im[..., None], 3, axis=-1) for im in images], axis=1)


def cityscapes_frame_name(source: str) -> str:
    """``{city}_{seq:06d}_{frame:06d}`` from a sample key or file name (e.g. ``aachen_000000_000019_leftImg8bit``)."""
    base = source.replace("\\", "/").rsplit("/", 1)[-1]
    match = _CITYSCAPES_FRAME.search(base)
    if match is None:
        raise UserError(
            f"'{source}' does not name a Cityscapes frame ({{city}}_{{seq:06d}}_{{frame:06d}}): "
            "use --format panels, or name the inputs like aachen_000000_000019_leftImg8bit.png"
        )
    return match.group(0)


def write_cityscapes(out_url: str, source: str, train_ids: np.ndarray, *, storage_cfg=None) -> str:
    """Write one submission PNG (label ids, uint8, size of ``train_ids``; ignore -> 0); return its URL."""
    url = join_url(out_url, f"{cityscapes_frame_name(source)}_pred.png")
    storage_for(url, storage_cfg).write_bytes(url, encode_png(train_ids_to_label_ids(train_ids)))
    return url


def write_panels(
    out_url: str,
    name: str,
    rgb: np.ndarray,
    train_ids: np.ndarray | None,
    depth: np.ndarray | None,
    *,
    palette: np.ndarray,
    depth_target: str = "depth",
    storage_cfg=None,
) -> list[str]:
    """Write the per-image PNGs listed in the module docstring; return their URLs.

    rgb uint8 (H, W, 3); train_ids (H, W) ints; depth float (H, W) in ``depth_target``'s unit (depth: metres,
    disparity: pixels, inverse_depth: 1/m). A task the model lacks (None) is skipped and its panel column left out.
    """
    storage = storage_for(out_url, storage_cfg)
    written: list[str] = []
    columns = [rgb]

    def put(suffix: str, data: bytes) -> None:
        url = join_url(out_url, f"{name}_{suffix}.png")
        storage.write_bytes(url, data)
        written.append(url)

    if train_ids is not None:
        sem_rgb = colorize_semantic(train_ids, palette)
        put("semantic", encode_png(sem_rgb))
        columns.append(sem_rgb)
    if depth is not None:
        depth_rgb = colorize_depth(depth, near_is_large=depth_target != "depth")
        put(depth_target, encode_png(depth_rgb))
        put(f"{depth_target}16", encode_target_png16(depth, depth_target))
        columns.append(depth_rgb)
    put("panel", encode_png(side_by_side(*columns)))
    return written


def write_prediction_info(out_url: str, depth_target: str, *, converted_from: str = "", storage_cfg=None) -> str:
    """Write ``{out_url}/predictions.json``: which depth target the images hold, its unit and the 16-bit encoding."""
    import json

    from padnet_dist.data.targets import DEPTH_TARGET_UNITS

    scale, offset = PNG16[depth_target]
    info = {
        "depth_target": depth_target,
        "depth_unit": DEPTH_TARGET_UNITS[depth_target],
        "png16": {"file": f"{{name}}_{depth_target}16.png", "scale": scale, "offset": offset, "invalid": 0},
        "png16_decode": "value = (p - offset) / scale where p > offset, else invalid",
    }
    if converted_from:
        info["converted_from"] = converted_from
    url = join_url(out_url, "predictions.json")
    storage_for(url, storage_cfg).write_bytes(url, (json.dumps(info, indent=2) + "\n").encode())
    return url


def denormalise_rgb(rgb: torch.Tensor) -> np.ndarray:
    """ImageNet-normalised (3, H, W) float -> uint8 (H, W, 3), the inverse of the loader's normalisation."""
    import torch

    from padnet_dist.data.augment import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    image = (rgb.detach().float().cpu() * std + mean) * 255.0
    return image.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def predict_batch(model: torch.nn.Module, rgb: torch.Tensor, device: torch.device | str = "cpu"):
    """Run ``model`` (eval mode, no grad) on normalised rgb (B, 3, H, W).

    Returns (train ids int64 (B, H, W) | None, depth float32 (B, H, W) | None) at the input's size, from the final
    outputs, or the intermediate ones (bilinearly upsampled) when the variant has no final head. Depth is in the
    unit of the checkpoint's ``data.depth_target`` (metres, disparity pixels or 1/m).
    """
    import torch
    import torch.nn.functional as F

    size = tuple(rgb.shape[-2:])
    model.eval()
    with torch.no_grad():
        out = model(rgb.to(device))
    semantic = out.get("final_semantic", out.get("inter_semantic"))
    depth = out.get("final_depth", out.get("inter_depth"))

    def full(x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x if tuple(x.shape[-2:]) == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    train_ids = None if semantic is None else full(semantic).argmax(1).cpu().numpy()
    depth_values = None if depth is None else full(depth)[:, 0].cpu().numpy().astype(np.float32)
    return train_ids, depth_values
