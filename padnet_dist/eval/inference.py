"""A committed checkpoint as an inference model: the one loader ``eval``, ``predict`` and ``export`` share.

A checkpoint URL may name a ``step-...`` directory, a phase dir or a run dir (the newest committed checkpoint;
run dirs prefer phase 2). The network is rebuilt from the checkpoint's own ``config.yaml`` and its fp32 weights are loaded (derived from
DeepSpeed's files, ``padnet_dist.train.weights``), so whatever ``model.*`` a user's config says never changes what is
scored or predicted.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from padnet_dist.config import Config, StorageConfig
from padnet_dist.errors import UserError
from padnet_dist.storage import storage_for


def _read(url: str, storage_cfg: StorageConfig | None) -> tuple[str, Config, dict[str, torch.Tensor]]:
    """(resolved step-... URL, its config, its fp32 state dict)."""
    from padnet_dist.train.checkpoint import read_config, read_model_state, resolve_checkpoint

    ckpt_url = resolve_checkpoint(url, storage_cfg)
    storage = storage_for(ckpt_url, storage_cfg)
    return ckpt_url, read_config(ckpt_url, storage), read_model_state(ckpt_url, storage)


@dataclass(frozen=True)
class LoadedCheckpoint:
    url: str  # the resolved step-... directory
    config: Config  # the config the checkpoint was trained with
    model: torch.nn.Module  # fp32 weights loaded, on CPU, eval mode


def load_checkpoint_model(url: str, storage_cfg: StorageConfig | None = None) -> LoadedCheckpoint:
    """Build the checkpoint's network and load its consolidated fp32 weights; a one-line UserError when
    ``url`` holds no committed checkpoint or its weights do not fit its ``config.yaml``."""
    from padnet_dist.model import build_model

    ckpt_url, ckpt_cfg, state = _read(url, storage_cfg)
    model = build_model(ckpt_cfg.model)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise UserError(
            f"the weights of {ckpt_url} do not fit the model of its config.yaml ({first}): use another checkpoint"
        ) from None
    return LoadedCheckpoint(url=ckpt_url, config=ckpt_cfg, model=model.eval())


def settings_for(ckpt_cfg: Config, config_files: Sequence[str] = (), overrides: Sequence[str] = ()) -> Config:
    """The checkpoint's config with ``config_files`` (YAML, in order) and ``key=value`` ``overrides`` applied on
    top: the run's own data, device and storage settings unless the user says otherwise."""
    from padnet_dist.config import load_config, to_yaml

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="padnet-ckpt-config-", delete=False) as f:
        f.write(to_yaml(ckpt_cfg))
    try:
        return load_config([f.name, *config_files], list(overrides))
    finally:
        os.unlink(f.name)


@dataclass(frozen=True)
class ExportSummary:
    checkpoint_url: str
    num_tensors: int
    num_values: int  # floating-point values over all tensors
    backbone: str


def export_state_dict(url: str, out_url: str, storage_cfg: StorageConfig | None = None) -> ExportSummary:
    """Write the checkpoint's consolidated fp32 state dict as one ``torch.save`` file to ``out_url`` (local path or
    s3://, atomically)."""
    ckpt_url, cfg, state_dict = _read(url, storage_cfg)
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    storage_for(out_url, storage_cfg).write_bytes(out_url, buf.getvalue())
    return ExportSummary(
        checkpoint_url=ckpt_url,
        num_tensors=len(state_dict),
        num_values=sum(t.numel() for t in state_dict.values() if t.is_floating_point()),
        backbone=cfg.model.backbone,
    )
