"""``padnet-dist predict``: depth and semantic predictions of a checkpoint, written as images.

Input is a folder (local or s3://, searched recursively) of .png/.jpg/.jpeg images, or a shard manifest
(``*.manifest.json``). ``--format panels`` (default) writes per image ``{name}_semantic.png``, ``{name}_{kind}.png``,
``{name}_{kind}16.png`` and ``{name}_panel.png``, ``{name}`` being the file's stem or the sample key, and once
``predictions.json`` naming the depth target, its unit and the 16-bit encoding. ``{kind}`` is the checkpoint's
``data.depth_target`` (``depth``: metres x 256; ``disparity``: pixels, Cityscapes' encoding x 256 + 1;
``inverse_depth``: 1/m x 16384; 0 = invalid), or ``depth`` with ``--depth-metres``, which converts a disparity or
inverse-depth model's output to metres (disparity needs each image's camera: predict from a shard manifest).
``--format cityscapes`` writes the benchmark's ``{city}_{seq}_{frame}_pred.png`` label-id images.
Predictions are made at the input's resolution (for a manifest: the resolution stored in the shards).
"""

from __future__ import annotations

import argparse
import io
import os
from collections.abc import Iterator

import numpy as np
import torch

from padnet_dist.config.cli_args import add_config_arguments, config_from_args
from padnet_dist.errors import UserError
from padnet_dist.world import World

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--checkpoint", required=True, metavar="URL", help="a step-... checkpoint, or a phase/run dir")
    parser.add_argument(
        "--input", required=True, metavar="DIR|MANIFEST_URL", help="a folder of images or a shard manifest"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (local or s3://)")
    parser.add_argument(
        "--format",
        choices=("panels", "cityscapes"),
        default="panels",
        help="panels: colour PNGs, 16-bit depth and a side-by-side panel; cityscapes: label-id PNGs for the benchmark",
    )
    parser.add_argument(
        "--depth-metres",
        action="store_true",
        help="write metres, converting a disparity or inverse-depth model's output (disparity: manifest input only)",
    )


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


def run(args: argparse.Namespace) -> int:
    from padnet_dist.commands.eval import load_checkpoint_model, settings_for
    from padnet_dist.distributed import choose_device
    from padnet_dist.eval.predict import (
        denormalise_rgb,
        predict_batch,
        write_cityscapes,
        write_panels,
        write_prediction_info,
    )
    from padnet_dist.targets import target_to_depth

    cfg = config_from_args(args)
    ckpt = load_checkpoint_model(args.checkpoint, cfg.storage)
    cfg = settings_for(ckpt.config, args)  # the run's settings (device, storage, palette source) unless overridden
    device = choose_device(cfg.engine, World())
    model = ckpt.model.to(device)
    num_classes = ckpt.config.model.num_classes
    is_manifest = args.input.endswith(".json")
    trained_on = ckpt.config.data.depth_target  # the unit of the depth head's output
    depth_kind = "depth" if args.depth_metres else trained_on
    if args.depth_metres and trained_on == "disparity" and not is_manifest:
        raise UserError(
            "--depth-metres converts disparity with each image's stereo baseline and fx, which image files lack: "
            "predict from a shard manifest (--input .../val.manifest.json)"
        )
    if args.format == "cityscapes" and num_classes != 19:
        raise UserError(
            f"--format cityscapes needs a 19-class Cityscapes model; this checkpoint has {num_classes} classes"
        )
    if is_manifest:
        palette = default_palette(num_classes, args.input, cfg.storage)
        inputs = _from_manifest(args.input, cfg)
    else:
        local_manifest = cfg.data.val_manifest if os.path.isfile(cfg.data.val_manifest or "/nonexistent") else ""
        palette = default_palette(num_classes, local_manifest, cfg.storage)
        inputs = _from_folder(args.input, cfg.storage)
    num_written = 0
    for name, rgb, camera in inputs:
        train_ids, depth = predict_batch(model, rgb, device)
        if depth is not None and depth_kind != trained_on:
            if trained_on == "disparity" and "baseline" not in camera:
                raise UserError(f"sample {name} has no stereo baseline: --depth-metres needs Cityscapes shards")
            depth = target_to_depth(
                torch.from_numpy(depth), trained_on, baseline_m=camera.get("baseline"), fx=camera.get("fx")
            ).numpy()
        if args.format == "cityscapes":
            if train_ids is None:
                raise UserError("--format cityscapes needs a model with a semantic output")
            write_cityscapes(args.out, name, train_ids[0], storage_cfg=cfg.storage)
        else:
            write_panels(
                args.out,
                name,
                denormalise_rgb(rgb[0]),
                None if train_ids is None else train_ids[0],
                None if depth is None else depth[0],
                palette=palette,
                depth_target=depth_kind,
                storage_cfg=cfg.storage,
            )
        num_written += 1
    if args.format == "panels":
        converted = trained_on if depth_kind != trained_on else ""
        write_prediction_info(args.out, depth_kind, converted_from=converted, storage_cfg=cfg.storage)
    print(f"wrote predictions of {num_written} images to {args.out} ({args.format})")
    return 0
