"""The fp32 weights of a committed checkpoint, derived from DeepSpeed's files: a checkpoint stores them once.

Where they come from, by the checkpoint's own ``config.yaml``:
- ZeRO 0-2 trained in fp32 or bf16 (autocast over fp32 weights, see ``train.engine.autocast``): rank 0's module
  states (``engine/mp_rank_00_model_states.pt``, key ``module``) hold the bare model's whole state dict in fp32.
  Read with plain ``torch.load(weights_only=True)``, without importing DeepSpeed.
- ZeRO-3 (module states hold only partitions) and fp16 under ZeRO 1-2 (module states hold fp16 copies, the fp32
  masters are in the optimizer partitions): consolidated by DeepSpeed's converter from every rank's files.
- fp16 without ZeRO (GPU only): the fp16 module weights, widened to fp32.
A ``model.pt`` in the checkpoint (written by earlier versions, or by hand) is used as it is.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
from pathlib import Path

import torch

from padnet_dist.errors import UserError
from padnet_dist.storage import join_url
from padnet_dist.storage.url import is_s3, local_path
from padnet_dist.train.checkpoint import COMMIT_MARKER, _read_json, _truncated, read_config

MODEL_FILE = "model.pt"  # a consolidated state dict, when a checkpoint has one
MODULE_STATES = "engine/mp_rank_00_model_states.pt"  # DeepSpeed's name for rank 0's module states (tag "engine")


def model_state_of(ckpt_url: str, storage) -> dict[str, torch.Tensor]:
    """The bare model's fp32 state dict (CPU) of the checkpoint at ``ckpt_url``; a one-line UserError naming a
    truncated, corrupt or missing file."""
    marker = _marker(ckpt_url, storage)
    if MODEL_FILE in marker.get("files", {}) or (not marker and storage.exists(join_url(ckpt_url, MODEL_FILE))):
        return _load_state(_read_checked(ckpt_url, MODEL_FILE, marker, storage), join_url(ckpt_url, MODEL_FILE))
    engine_cfg = read_config(ckpt_url, storage).engine
    if engine_cfg.zero_stage == 3 or (engine_cfg.precision == "fp16" and engine_cfg.zero_stage > 0):
        return _consolidated(ckpt_url, marker, storage)
    states = _load_state(_read_checked(ckpt_url, MODULE_STATES, marker, storage), join_url(ckpt_url, MODULE_STATES))
    module = states.get("module") if isinstance(states, dict) else None
    if not isinstance(module, dict):
        raise UserError(f"{join_url(ckpt_url, MODULE_STATES)} holds no module states: use another checkpoint")
    return {k: v.float() if v.is_floating_point() else v for k, v in module.items()}


def _consolidated(ckpt_url: str, marker: dict, storage) -> dict[str, torch.Tensor]:
    from padnet_dist.train import engine as seam

    remote = is_s3(ckpt_url)
    local_dir = Path(tempfile.mkdtemp(prefix="padnet-export-")) if remote else Path(local_path(ckpt_url))
    try:
        for rel in sorted(marker.get("files", {})):
            if rel.startswith(seam.ENGINE_TAG + "/") and rel.endswith(".pt"):
                data = _read_checked(ckpt_url, rel, marker, storage)
                if remote:
                    (local_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                    (local_dir / rel).write_bytes(data)
        return seam.fp32_state_dict_from_zero_files(local_dir)
    finally:
        if remote:
            shutil.rmtree(local_dir, ignore_errors=True)


def _marker(ckpt_url: str, storage) -> dict:
    url = join_url(ckpt_url, COMMIT_MARKER)
    return _read_json(url, storage) if storage.exists(url) else {}


def _read_checked(ckpt_url: str, rel: str, marker: dict, storage) -> bytes:
    """The bytes of ``rel``, checked against the size and SHA-256 the marker lists (when it lists them)."""
    url = join_url(ckpt_url, rel)
    data = storage.read_bytes(url)
    size = marker.get("files", {}).get(rel)
    if size is not None and size != len(data):
        raise UserError(_truncated(url, len(data), size))
    digest = marker.get("sha256", {}).get(rel)
    if digest is not None and hashlib.sha256(data).hexdigest() != digest:
        raise UserError(
            f"checkpoint file {url} is corrupt (its SHA-256 differs from {COMMIT_MARKER}'s): use another checkpoint"
        )
    return data


def _load_state(data: bytes, url: str):
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"checkpoint file {url} is corrupt ({type(e).__name__}): use another checkpoint") from None
