"""The pipeline's first job: are a config's splits there and do they fit its model? (cheap: manifests only)."""

from __future__ import annotations

from padnet_dist.config import Config
from padnet_dist.data.manifest import read_manifest
from padnet_dist.errors import UserError


def check_data(cfg: Config) -> list[str]:
    """One line per split (samples, shards, classes); ``UserError`` naming the setting and the fix when a manifest is
    missing or unreadable, a split is empty, or its classes differ from ``model.num_classes`` or the other split's."""
    from padnet_dist.launch.preflight import check_training_inputs

    check_training_inputs(cfg)
    lines, classes = [], None
    for key, url in (("data.train_manifest", cfg.data.train_manifest), ("data.val_manifest", cfg.data.val_manifest)):
        if not url:
            lines.append(f"{key}: not set (no validation split: evaluation jobs will fail)")
            continue
        manifest = read_manifest(url, cfg.storage)
        if manifest.num_samples < 1:
            raise UserError(f"{key}={url} lists no samples: rewrite the shards with `padnet-dist shard ...`")
        if manifest.num_classes != cfg.model.num_classes:
            raise UserError(
                f"{key}={url} has {manifest.num_classes} classes but model.num_classes={cfg.model.num_classes}: "
                f"set model.num_classes={manifest.num_classes} or use the matching shards"
            )
        if classes is not None and manifest.classes != classes:
            raise UserError(f"{key}={url} names other classes than data.train_manifest: use shards of one dataset")
        classes = manifest.classes
        lines.append(f"{key}: {manifest.dataset}/{manifest.split}, {manifest.num_samples} samples in "
                     f"{manifest.num_shards} shards, {manifest.num_classes} classes")  # fmt: skip
    return lines
