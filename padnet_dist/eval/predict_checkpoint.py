"""Depth and semantic predictions of a checkpoint, written as images (``padnet-dist predict``).

Input is a folder (local or s3://, searched recursively) of .png/.jpg/.jpeg images, or a shard manifest
(``*.manifest.json``). ``panels`` (default) writes per image ``{name}_semantic.png``, ``{name}_{kind}.png``,
``{name}_{kind}16.png`` and ``{name}_panel.png``, ``{name}`` being the file's stem or the sample key, and once
``predictions.json`` naming the depth target, its unit and the 16-bit encoding. ``{kind}`` is the checkpoint's
``data.depth_target`` (``depth``: metres x 256; ``disparity``: pixels, Cityscapes' encoding x 256 + 1;
``inverse_depth``: 1/m x 16384; 0 = invalid), or ``depth`` with ``depth_in_metres``, which converts a disparity or
inverse-depth model's output to metres (disparity needs each image's camera: predict from a shard manifest).
``cityscapes`` writes the benchmark's ``{city}_{seq}_{frame}_pred.png`` label-id images.
Predictions are made at the input's resolution (for a manifest: the resolution stored in the shards).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from padnet_dist.config import StorageConfig
from padnet_dist.errors import UserError
from padnet_dist.world import World

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FORMATS = ("panels", "cityscapes")


def default_palette(num_classes: int, manifest_url: str = "", storage_cfg=None) -> np.ndarray:
    """The colours of train ids: a manifest's palette, else Cityscapes' (19 classes), the synthetic dataset's
    (8 classes), or generated distinct colours."""
    from padnet_dist.eval.predict import synthetic_palette

    if manifest_url:
        from padnet_dist.data.manifest import read_manifest

        palette = read_manifest(manifest_url, storage_cfg).palette
        if len(palette) >= num_classes:
            return np.asarray(palette, dtype=np.uint8)
    if num_classes == 19:
        from padnet_dist.data.cityscapes_labels import TRAIN_PALETTE

        return np.asarray(TRAIN_PALETTE, dtype=np.uint8)
    from padnet_dist.data.synthetic_scene import SYNTHETIC_PALETTE

    if num_classes == len(SYNTHETIC_PALETTE):
        return np.asarray(SYNTHETIC_PALETTE, dtype=np.uint8)
    return synthetic_palette(num_classes)


def _images_in(folder_url: str, storage_cfg) -> list[str]:
    from padnet_dist.storage import storage_for

    storage = storage_for(folder_url, storage_cfg)
    urls = [u for u in storage.list(folder_url) if u.lower().endswith(IMAGE_SUFFIXES)]
    if not urls:
        raise UserError(f"no .png/.jpg images under {folder_url}: give a folder of images or a *.manifest.json")
    stems: dict[str, str] = {}
    for url in urls:
        stem = os.path.splitext(url.rstrip("/").rsplit("/", 1)[-1])[0]
        if stem in stems:
            raise UserError(f"two inputs share the name {stem} ({stems[stem]}, {url}): their outputs would collide")
        stems[stem] = url
    return urls


def _from_folder(folder_url: str, storage_cfg) -> Iterator[tuple[str, torch.Tensor, dict[str, float]]]:
    """(name, normalised rgb (1, 3, H, W), camera {} (unknown)) per image file."""
    from PIL import Image

    from padnet_dist.data.augment import normalise_rgb
    from padnet_dist.storage import storage_for

    storage = storage_for(folder_url, storage_cfg)
    for url in _images_in(folder_url, storage_cfg):
        try:
            with Image.open(io.BytesIO(storage.read_bytes(url))) as image:
                rgb = np.array(image.convert("RGB"))
        except OSError as e:
            raise UserError(f"cannot read image {url} ({e}): remove it or replace it with a PNG/JPEG") from None
        name = os.path.splitext(url.rsplit("/", 1)[-1])[0]
        yield name, normalise_rgb(torch.from_numpy(rgb).permute(2, 0, 1))[None], {}


def _from_manifest(manifest_url: str, cfg) -> Iterator[tuple[str, torch.Tensor, dict[str, float]]]:
    """(sample key, normalised rgb (1, 3, H, W), camera {fx, fy, cx, cy, baseline?}) per sample, padding left out."""
    from dataclasses import replace

    from padnet_dist.data.loader import build_eval_loader

    data_cfg = replace(cfg.data, depth_target="depth")  # only rgb and camera are read: any dataset will do
    for batch in build_eval_loader(data_cfg, World(), storage_cfg=cfg.storage, manifest_url=manifest_url):
        for i, key in enumerate(batch["keys"]):
            if bool(batch["valid"][i]):
                yield key, batch["rgb"][i : i + 1], {k: float(v[i]) for k, v in batch["camera"].items()}


def predict_checkpoint(
    checkpoint_url: str,
    input_url: str,
    out_url: str,
    *,
    output_format: str = "panels",
    depth_in_metres: bool = False,
    storage_cfg: StorageConfig | None = None,
    config_files: Sequence[str] = (),
    overrides: Sequence[str] = (),
) -> int:
    """Predict every image of ``input_url`` (a folder or a ``*.manifest.json``) with the checkpoint and write them
    below ``out_url`` in ``output_format`` (see the module docstring); returns the number of images written.

    Device, storage and palette source are the checkpoint's settings with ``config_files`` and ``overrides``
    applied; ``storage_cfg`` reaches the checkpoint.
    """
    from padnet_dist.data.targets import target_to_depth
    from padnet_dist.distributed import choose_device
    from padnet_dist.eval.inference import load_checkpoint_model, settings_for
    from padnet_dist.eval.predict import (
        denormalise_rgb,
        predict_batch,
        write_cityscapes,
        write_panels,
        write_prediction_info,
    )

    if output_format not in FORMATS:
        raise UserError(f"output format '{output_format}' is not one of {', '.join(FORMATS)}")
    ckpt = load_checkpoint_model(checkpoint_url, storage_cfg)
    cfg = settings_for(ckpt.config, config_files, overrides)
    device = choose_device(cfg.engine, World())
    model = ckpt.model.to(device)
    num_classes = ckpt.config.model.num_classes
    is_manifest = input_url.endswith(".json")
    trained_on = ckpt.config.data.depth_target  # the unit of the depth head's output
    depth_kind = "depth" if depth_in_metres else trained_on
    if depth_in_metres and trained_on == "disparity" and not is_manifest:
        raise UserError(
            "--depth-metres converts disparity with each image's stereo baseline and fx, which image files lack: "
            "predict from a shard manifest (--input .../val.manifest.json)"
        )
    if output_format == "cityscapes" and num_classes != 19:
        raise UserError(
            f"--format cityscapes needs a 19-class Cityscapes model; this checkpoint has {num_classes} classes"
        )
    if is_manifest:
        palette = default_palette(num_classes, input_url, cfg.storage)
        inputs = _from_manifest(input_url, cfg)
    else:
        local_manifest = cfg.data.val_manifest if os.path.isfile(cfg.data.val_manifest or "/nonexistent") else ""
        palette = default_palette(num_classes, local_manifest, cfg.storage)
        inputs = _from_folder(input_url, cfg.storage)
    num_written = 0
    for name, rgb, camera in inputs:
        train_ids, depth = predict_batch(model, rgb, device)
        if depth is not None and depth_kind != trained_on:
            if trained_on == "disparity" and "baseline" not in camera:
                raise UserError(f"sample {name} has no stereo baseline: --depth-metres needs Cityscapes shards")
            depth = target_to_depth(
                torch.from_numpy(depth), trained_on, baseline_m=camera.get("baseline"), fx=camera.get("fx")
            ).numpy()
        if output_format == "cityscapes":
            if train_ids is None:
                raise UserError("--format cityscapes needs a model with a semantic output")
            write_cityscapes(out_url, name, train_ids[0], storage_cfg=cfg.storage)
        else:
            write_panels(
                out_url,
                name,
                denormalise_rgb(rgb[0]),
                None if train_ids is None else train_ids[0],
                None if depth is None else depth[0],
                palette=palette,
                depth_target=depth_kind,
                storage_cfg=cfg.storage,
            )
        num_written += 1
    if output_format == "panels":
        converted = trained_on if depth_kind != trained_on else ""
        write_prediction_info(out_url, depth_kind, converted_from=converted, storage_cfg=cfg.storage)
    return num_written
