"""Example panels: validation images with their ground truth and a checkpoint's predictions, as PNG rows.

One row per (sample, task): RGB | ground truth | intermediate prediction | final prediction, for semantic (train ids
in the dataset's colours, ignore black) and depth (viridis, near bright; every column of a row on the ground
truth's value range, so colours compare across columns; invalid black). A column appears when the checkpoint's
phase trains that output (``model.phase_outputs``): a phase-1 PAD-Net shows its intermediate scene parsing only.
Intermediate outputs (1/4 resolution) are upsampled bilinearly to the image, as evaluation scores them. Colouring
is ``padnet_dist.eval.predict``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from padnet_dist.config import DataConfig, StorageConfig
from padnet_dist.world import World


@dataclass(frozen=True)
class Sample:
    key: str
    rgb: torch.Tensor  # (3, H, W) normalised as the model reads it
    semantic: np.ndarray  # (H, W) train ids, ignore_index where unlabelled
    depth: np.ndarray  # (H, W) in data.depth_target's unit, 0 invalid


@dataclass(frozen=True)
class Panel:
    name: str  # file name, e.g. "phase2-synthetic-00000-depth.png"
    task: str  # "semantic" | "depth"
    key: str  # the sample's key
    columns: tuple[str, ...]  # what each column shows, left to right
    png: bytes


def validation_samples(
    data_cfg: DataConfig, storage_cfg: StorageConfig | None, manifest_url: str, num: int
) -> list[Sample]:
    """The first ``num`` samples of the split, in the evaluation loader's order (full resolution, no augmentation)."""
    from padnet_dist.data.loader import build_eval_loader

    data_cfg = replace(data_cfg, num_workers=0)  # a few samples: starting workers would cost more than reading
    samples: list[Sample] = []
    for batch in build_eval_loader(data_cfg, World(), storage_cfg=storage_cfg, manifest_url=manifest_url):
        for i, key in enumerate(batch["keys"]):
            if bool(batch["valid"][i]) and len(samples) < num:
                samples.append(Sample(key, batch["rgb"][i], batch["semantic"][i].numpy(), batch["depth"][i, 0].numpy()))
        if len(samples) >= num:
            break
    return samples


def _full(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    x = x.float()
    return x if tuple(x.shape[-2:]) == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def checkpoint_panels(
    checkpoint_url: str, samples: list[Sample], *, prefix: str, palette: np.ndarray, storage_cfg=None
) -> list[Panel]:
    """Panels of the checkpoint's predictions on ``samples``; file names start with ``prefix``."""
    from padnet_dist.eval.inference import load_checkpoint_model
    from padnet_dist.eval.predict import colorize_depth, colorize_semantic, denormalise_rgb, encode_png, side_by_side

    ckpt = load_checkpoint_model(checkpoint_url, storage_cfg)
    # a GPU when the report's task has one; the CPU is enough for a few images
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = ckpt.model.to(device)
    outputs = ckpt.model.phase_outputs(ckpt.config.phase)
    near_is_large = ckpt.config.data.depth_target != "depth"
    panels: list[Panel] = []
    for sample in samples:
        size = tuple(sample.semantic.shape)
        with torch.no_grad():
            pred = {k: v.float().cpu() for k, v in model(sample.rgb[None].to(device), outputs=outputs).items()}
        rgb = denormalise_rgb(sample.rgb)
        for task in ("semantic", "depth"):
            names = [n for n in (f"inter_{task}", f"final_{task}") if n in pred]
            if not names:
                continue
            if task == "semantic":
                images = [colorize_semantic(sample.semantic, palette)]
                images += [colorize_semantic(_full(pred[n], size).argmax(1)[0].numpy(), palette) for n in names]
            else:
                valid = sample.depth[np.isfinite(sample.depth) & (sample.depth > 0)]
                lo, hi = (float(valid.min()), float(valid.max())) if valid.size else (None, None)

                def colour(x: np.ndarray, lo=lo, hi=hi) -> np.ndarray:
                    return colorize_depth(x, min_depth_m=lo, max_depth_m=hi, near_is_large=near_is_large)

                images = [colour(sample.depth)] + [colour(_full(pred[n], size)[0, 0].numpy()) for n in names]
            name = f"{prefix}-{sample.key.replace('/', '_')}-{task}.png"  # keys may hold '/'
            png = encode_png(side_by_side(rgb, *images))
            panels.append(Panel(name, task, sample.key, ("RGB", "ground truth", *names), png))
    return panels
