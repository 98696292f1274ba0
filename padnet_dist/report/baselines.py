"""Trivial baselines on the evaluation's own split: what a model that learnt nothing but the training statistics scores.

- majority class: predict everywhere the training split's most frequent train id (ignore pixels not counted; a tie
  goes to the lowest id).
- mean depth: predict everywhere the training split's mean ground-truth value over its valid pixels, in the unit the
  run's depth head predicts (``data.depth_target``: metres, disparity pixels or 1/m).

Both statistics are read through the evaluation loader (``build_eval_loader``: full resolution, no augmentation, the
loader's depth range and target conversion), with exact accumulation: class counts as int64, the depth sum as
float64 per sample then over samples, the pixel count as int64. The predictor is then scored by the one evaluation
path (``padnet_dist.eval.runner.evaluate``) on the validation split, so its numbers carry the metric keys, ranges and
conventions of ``padnet-dist eval``. The depth it predicts is that mean rounded to float32, as every prediction is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from padnet_dist.config import DataConfig, StorageConfig
from padnet_dist.errors import UserError
from padnet_dist.world import World


class ConstantPredictor(torch.nn.Module):
    """Outputs ``final_semantic`` logits selecting ``class_id`` and ``final_depth`` = ``depth`` at every pixel,
    at the input's resolution: (B, C, H, W) and (B, 1, H, W)."""

    def __init__(self, class_id: int, num_classes: int, depth: float) -> None:
        super().__init__()
        logits = torch.zeros(1, num_classes, 1, 1)
        logits[0, class_id] = 1.0
        self.register_buffer("logits", logits)
        self.depth = float(depth)

    def forward(self, rgb: torch.Tensor, outputs=None) -> dict[str, torch.Tensor]:
        b, _, h, w = rgb.shape
        return {
            # expand() shares the one (C,) vector: a full-resolution logit map costs no memory
            "final_semantic": self.logits.expand(b, -1, h, w),
            "final_depth": torch.full((b, 1, h, w), self.depth, dtype=torch.float32),
        }


def training_statistics(
    data_cfg: DataConfig, storage_cfg: StorageConfig | None, *, train_manifest: str, num_classes: int
) -> tuple[np.ndarray, float, int]:
    """(class pixel counts int64 (C,), mean valid depth target (float64), number of valid depth pixels) of the
    training split ``train_manifest``; ignore pixels are not counted."""
    from padnet_dist.data.loader import build_eval_loader

    counts = np.zeros(num_classes, dtype=np.int64)
    depth_sum, depth_pixels = 0.0, 0
    loader = build_eval_loader(data_cfg, World(), storage_cfg=storage_cfg, manifest_url=train_manifest)
    for batch in loader:
        for i in range(len(batch["keys"])):
            if not bool(batch["valid"][i]):
                continue  # padding: a copy of another sample
            ids = batch["semantic"][i].numpy().ravel()
            ids = ids[ids != data_cfg.ignore_index]
            if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
                raise UserError(
                    f"{train_manifest} has train ids outside 0..{num_classes - 1}: the run's model.num_classes does "
                    "not match its training split"
                )
            counts += np.bincount(ids, minlength=num_classes).astype(np.int64)
            depth = batch["depth"][i].numpy().astype(np.float64)
            valid = np.isfinite(depth) & (depth > 0)
            depth_sum += float(depth[valid].sum())
            depth_pixels += int(valid.sum())
    mean = depth_sum / depth_pixels if depth_pixels else float("nan")
    return counts, mean, depth_pixels


def compute_baselines(
    data_cfg: DataConfig,
    storage_cfg: StorageConfig | None,
    *,
    train_manifest: str,
    val_manifest: str,
    num_classes: int,
) -> dict[str, Any]:
    """The majority-class and mean-depth predictors of ``train_manifest`` scored on ``val_manifest``.

    Returns ``{"majority_class_miou", "mean_depth_rel", "majority_class", "majority_class_name",
    "train_mean_depth", "depth_target", "train_manifest", "split_manifest", "metrics"}``; ``metrics`` is
    ``evaluate``'s dict for the constant predictor (``depth`` and ``semantic`` sections, ``cityscapes`` too on
    Cityscapes).
    """
    from padnet_dist.data.loader import build_eval_loader
    from padnet_dist.eval.evaluate import depth_range_m
    from padnet_dist.eval.runner import evaluate

    counts, mean_depth, depth_pixels = training_statistics(
        data_cfg, storage_cfg, train_manifest=train_manifest, num_classes=num_classes
    )
    if counts.sum() == 0 or depth_pixels == 0:
        raise UserError(f"{train_manifest} has no labelled or no valid depth pixels: the baselines need both")
    majority = int(np.argmax(counts))
    loader = build_eval_loader(data_cfg, World(), storage_cfg=storage_cfg, manifest_url=val_manifest)
    classes = list(loader.class_names)
    depth_min_m, depth_cap_m = depth_range_m(loader.dataset_name, None)
    metrics = evaluate(
        ConstantPredictor(majority, num_classes, mean_depth),
        loader,
        num_classes=num_classes,
        dataset=loader.dataset_name,
        world=World(),
        ignore_index=data_cfg.ignore_index,
        depth_min_m=depth_min_m,
        depth_cap_m=depth_cap_m,
        depth_target=data_cfg.depth_target,
        class_names=classes or None,
    )
    metrics["split_manifest"] = val_manifest
    return {
        "majority_class_miou": metrics["semantic"]["miou"],
        "mean_depth_rel": metrics["depth"]["rel"],
        "majority_class": majority,
        "majority_class_name": classes[majority] if len(classes) == num_classes else str(majority),
        "train_mean_depth": mean_depth,
        "depth_target": data_cfg.depth_target,
        "train_manifest": train_manifest,
        "split_manifest": val_manifest,
        "metrics": metrics,
    }
