"""The evaluation of a split, shared by the training loop (``{phase_dir}/eval/step-*.json``) and ``padnet-dist eval``
(``{checkpoint}/metrics.json``): one loader, one scoring pass, the same metrics dict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from padnet_dist.config import Config, DataConfig, StorageConfig
from padnet_dist.errors import UserError
from padnet_dist.world import World

NYUD_DEPTH_RANGE_M = (1e-3, 10.0)  # the common NYUD convention: 1e-3 < gt < 10 m


def depth_range_m(dataset: str, depth_cap_m: float | None) -> tuple[float, float | None]:
    """(min, cap) in metres of the ground-truth depth that is scored: NYUD's convention unless a cap is given
    (``depth_cap_m`` 0 = no cap); no range for other datasets."""
    if depth_cap_m is None:
        return NYUD_DEPTH_RANGE_M if dataset == "nyud" else (0.0, None)
    return (0.0, depth_cap_m if depth_cap_m > 0 else None)


def evaluate_split(
    model: torch.nn.Module,
    *,
    data_cfg: DataConfig,
    storage_cfg: StorageConfig | None,
    world: World,
    device: torch.device,
    num_classes: int,
    depth_target: str,
    outputs: Sequence[str] | None,
    manifest_url: str | None = None,
    depth_cap_m: float | None = None,
    depth_in_metres: bool = False,
) -> dict[str, Any]:
    """Score ``model`` on this rank's share of ``manifest_url`` (default ``data_cfg.val_manifest``), summed over
    the ranks of ``world``; every rank returns the same dict (``padnet_dist.eval.runner.evaluate``'s, plus
    ``split_manifest`` and ``depth.gt_range_m``).

    The manifest is read once, by the loader, which also gives the dataset and class names. A process group must
    exist when ``world.is_distributed``. ``depth_target`` is what the model's depth head predicts; ``outputs``
    restricts what is computed and scored (a phase's outputs). ``depth_cap_m``: see ``depth_range_m``.
    """
    from padnet_dist.data.loader import build_eval_loader
    from padnet_dist.eval.runner import evaluate

    loader = build_eval_loader(data_cfg, world, storage_cfg=storage_cfg, manifest_url=manifest_url)
    url = manifest_url or data_cfg.val_manifest
    classes = list(loader.class_names)
    if classes and len(classes) != num_classes:
        raise UserError(
            f"{url} has {len(classes)} classes but the model predicts {num_classes}: "
            "evaluate on the dataset the model was trained for"
        )
    depth_min_m, depth_max_m = depth_range_m(loader.dataset_name, depth_cap_m)
    metrics = evaluate(
        model.to(device),
        loader,
        num_classes=num_classes,
        dataset=loader.dataset_name,
        world=world,
        ignore_index=data_cfg.ignore_index,
        device=device,
        depth_min_m=depth_min_m,
        depth_cap_m=depth_max_m,
        depth_target=depth_target,
        depth_in_metres=depth_in_metres,
        class_names=classes or None,
        outputs=outputs,
    )
    metrics["split_manifest"] = url
    if "depth" in metrics:
        metrics["depth"]["gt_range_m"] = [depth_min_m, depth_max_m]
    return metrics


def evaluate_checkpoint(
    checkpoint_url: str,
    world: World,
    *,
    storage_cfg: StorageConfig | None = None,
    config_files: Sequence[str] = (),
    overrides: Sequence[str] = (),
    split_manifest: str = "",
    depth_cap_m: float | None = None,
    depth_in_metres: bool = False,
) -> tuple[dict[str, Any], str | None]:
    """Evaluate a checkpoint on this rank of ``world`` and write ``{checkpoint}/metrics.json`` (rank 0).

    The network comes from the checkpoint; the data, device and storage settings are the checkpoint's config with
    ``config_files`` and ``overrides`` applied; the split is ``split_manifest`` or ``data.val_manifest``.
    ``storage_cfg`` reaches the checkpoint. Joins (and leaves) the process group when ``world`` is distributed and
    none exists. Returns (metrics, URL written on rank 0, else None).
    """
    from padnet_dist.distributed import choose_backend, choose_device, join_process_group
    from padnet_dist.eval.inference import load_checkpoint_model, settings_for
    from padnet_dist.eval.report import write_metrics_json
    from padnet_dist.storage import join_url

    ckpt = load_checkpoint_model(checkpoint_url, storage_cfg)
    cfg: Config = settings_for(ckpt.config, config_files, overrides)
    manifest_url = split_manifest or cfg.data.val_manifest
    if not manifest_url:
        raise UserError("no split to evaluate: set data.val_manifest=URL or pass --split-manifest URL")
    trained_on = ckpt.config.data.depth_target
    if cfg.data.depth_target != trained_on:
        raise UserError(
            f"the checkpoint's depth head predicts {trained_on}, not data.depth_target={cfg.data.depth_target}: "
            "drop that override (--depth-metres scores in metres)"
        )
    device = choose_device(cfg.engine, world)
    created = world.is_distributed and join_process_group(world, choose_backend(cfg.engine, device))
    try:
        metrics = evaluate_split(
            ckpt.model,
            data_cfg=cfg.data,
            storage_cfg=cfg.storage,
            world=world,
            device=device,
            num_classes=ckpt.config.model.num_classes,
            depth_target=trained_on,
            outputs=ckpt.model.phase_outputs(ckpt.config.phase),  # a phase-1 checkpoint has untrained decoders
            manifest_url=manifest_url,
            depth_cap_m=depth_cap_m,
            depth_in_metres=depth_in_metres,
        )
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()
    metrics["checkpoint"] = ckpt.url
    metrics["num_ranks"] = world.world_size
    if not world.is_main:
        return metrics, None
    url = join_url(ckpt.url, "metrics.json")
    write_metrics_json(url, metrics, storage_cfg=cfg.storage)
    return metrics, url
