"""``padnet-dist eval``: score a checkpoint on a split, on the launcher's ranks or ``--nproc N`` local ones.

The network comes from the checkpoint (its ``config.yaml`` and ``model.pt``). The other settings (which manifest,
batch size, workers, device, storage endpoint) are the checkpoint's config with ``--config`` files and ``key=value``
overrides applied on top, so ``padnet-dist eval --checkpoint URL`` alone evaluates on the run's own validation
split. Rank 0 prints a table and writes ``{checkpoint}/metrics.json``. Depth is scored in the unit the checkpoint
was trained on (``data.depth_target``: metres, disparity pixels or 1/m; the JSON's ``depth.target`` and
``depth.unit`` say which), or in metres with ``--depth-metres``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

import torch

from padnet_dist.config import Config, StorageConfig
from padnet_dist.config.cli_args import add_config_arguments, config_from_args
from padnet_dist.distributed import choose_backend, choose_device, join_process_group
from padnet_dist.errors import UserError
from padnet_dist.storage import storage_for
from padnet_dist.world import World

NYUD_DEPTH_RANGE_M = (1e-3, 10.0)  # the common NYUD convention: 1e-3 < gt < 10 m


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="URL",
        help="a step-... checkpoint, or a phase/run dir (newest committed)",
    )
    parser.add_argument(
        "--split-manifest", default="", metavar="URL", help="evaluate this split instead of data.val_manifest"
    )
    parser.add_argument(
        "--depth-cap-m",
        type=float,
        default=None,
        metavar="M",
        help="score depth only where ground truth < M metres (default: 10 for nyud, none otherwise; 0 = none)",
    )
    parser.add_argument(
        "--depth-metres",
        action="store_true",
        help="score depth in metres, converting a disparity or inverse-depth model's output with each sample's camera",
    )
    parser.add_argument("--nproc", type=int, default=0, metavar="N", help="start N local ranks (CPU: gloo)")


@dataclass(frozen=True)
class LoadedCheckpoint:
    url: str  # the resolved step-... directory
    config: Config  # the config the checkpoint was trained with
    model: torch.nn.Module  # fp32 weights loaded, on CPU, eval mode


def load_checkpoint_model(url: str, storage_cfg: StorageConfig | None = None) -> LoadedCheckpoint:
    """Build the checkpoint's network and load its consolidated fp32 weights."""
    from padnet_dist.model import build_model
    from padnet_dist.train.checkpoint import read_config, read_model_state, resolve_checkpoint

    ckpt_url = resolve_checkpoint(url, storage_cfg)
    storage = storage_for(ckpt_url, storage_cfg)
    ckpt_cfg, state = read_config(ckpt_url, storage), read_model_state(ckpt_url, storage)
    model = build_model(ckpt_cfg.model)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise UserError(
            f"{ckpt_url}/model.pt does not fit the model of its config.yaml ({first}): re-export it"
        ) from None
    return LoadedCheckpoint(url=ckpt_url, config=ckpt_cfg, model=model.eval())


def settings_for(ckpt_cfg: Config, args: argparse.Namespace) -> Config:
    """The checkpoint's config with the command's ``--config`` files and ``key=value`` overrides applied."""
    import os
    import tempfile

    from padnet_dist.config import load_config, to_yaml

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="padnet-ckpt-config-", delete=False) as f:
        f.write(to_yaml(ckpt_cfg))
    try:
        return load_config([f.name, *args.config], args.overrides)
    finally:
        os.unlink(f.name)


def _rank_argv(args: argparse.Namespace) -> list[str]:
    argv = [sys.executable, "-m", "padnet_dist.cli", "eval", "--checkpoint", args.checkpoint]
    for path in args.config:
        argv += ["--config", path]
    if args.split_manifest:
        argv += ["--split-manifest", args.split_manifest]
    if args.depth_cap_m is not None:
        argv += ["--depth-cap-m", repr(args.depth_cap_m)]
    if args.depth_metres:
        argv += ["--depth-metres"]
    return argv + list(args.overrides)


def depth_range_m(dataset: str, depth_cap_m: float | None) -> tuple[float, float | None]:
    """(min, cap) of the ground-truth depth that is scored: NYUD's convention unless the user gave a cap."""
    if depth_cap_m is None:
        return NYUD_DEPTH_RANGE_M if dataset == "nyud" else (0.0, None)
    return (0.0, depth_cap_m if depth_cap_m > 0 else None)


def evaluate_checkpoint(
    ckpt: LoadedCheckpoint,
    data_cfg_source: Config,
    world: World,
    *,
    manifest_url: str,
    depth_cap_m: float | None,
    depth_in_metres: bool = False,
) -> dict[str, Any]:
    """Evaluate on this rank's share of ``manifest_url``; every rank returns the split's metrics."""
    from padnet_dist.data.loader import build_eval_loader
    from padnet_dist.data.manifest import read_manifest
    from padnet_dist.eval.runner import evaluate

    cfg = data_cfg_source
    trained_on = ckpt.config.data.depth_target
    if cfg.data.depth_target != trained_on:
        raise UserError(
            f"the checkpoint's depth head predicts {trained_on}, not data.depth_target={cfg.data.depth_target}: "
            "drop that override (--depth-metres scores in metres)"
        )
    manifest = read_manifest(manifest_url, cfg.storage)
    num_classes = ckpt.config.model.num_classes
    if manifest.num_classes and manifest.num_classes != num_classes:
        raise UserError(
            f"{manifest_url} has {manifest.num_classes} classes but the checkpoint's model predicts {num_classes}: "
            "evaluate on the dataset the checkpoint was trained for"
        )
    device = choose_device(cfg.engine, world)
    created = world.is_distributed and join_process_group(world, choose_backend(cfg.engine, device))
    try:
        loader = build_eval_loader(cfg.data, world, storage_cfg=cfg.storage, manifest_url=manifest_url)
        depth_min_m, depth_max_m = depth_range_m(manifest.dataset, depth_cap_m)
        metrics = evaluate(
            ckpt.model.to(device),
            loader,
            num_classes=num_classes,
            dataset=manifest.dataset,
            world=world,
            ignore_index=cfg.data.ignore_index,
            device=device,
            depth_min_m=depth_min_m,
            depth_cap_m=depth_max_m,
            depth_target=trained_on,
            depth_in_metres=depth_in_metres,
            class_names=manifest.classes or None,
            outputs=ckpt.model.phase_outputs(ckpt.config.phase),  # a phase-1 checkpoint has untrained decoders
        )
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()
    metrics["checkpoint"] = ckpt.url
    metrics["split_manifest"] = manifest_url
    metrics["split"] = manifest.split
    if "depth" in metrics:
        metrics["depth"]["gt_range_m"] = [depth_min_m, depth_max_m]
    return metrics


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)  # validate before starting any rank
    from padnet_dist import launch

    if args.nproc:
        return launch.spawn_local(args.nproc, _rank_argv(args))

    from padnet_dist.eval.report import format_table, write_metrics_json
    from padnet_dist.storage import join_url

    world = launch.current_world()
    ckpt = load_checkpoint_model(args.checkpoint, cfg.storage)
    cfg = settings_for(ckpt.config, args)
    manifest_url = args.split_manifest or cfg.data.val_manifest
    if not manifest_url:
        raise UserError("no split to evaluate: set data.val_manifest=URL or pass --split-manifest URL")
    metrics = evaluate_checkpoint(
        ckpt, cfg, world, manifest_url=manifest_url, depth_cap_m=args.depth_cap_m, depth_in_metres=args.depth_metres
    )
    if world.is_main:
        metrics["num_ranks"] = world.world_size
        url = join_url(ckpt.url, "metrics.json")
        write_metrics_json(url, metrics, storage_cfg=cfg.storage)
        print(format_table(metrics))
        print(f"wrote {url}")
    return 0
