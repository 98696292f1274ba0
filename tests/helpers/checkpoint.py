"""A committed checkpoint of a model in the layout training writes: config.yaml, the weights in DeepSpeed's module
states (``engine/mp_rank_00_model_states.pt``, key ``module``: their only copy) and COMMITTED."""

from __future__ import annotations

import dataclasses
import io
import json
import os

import torch

from padnet_dist.config import Config, to_yaml
from padnet_dist.model import build_model
from padnet_dist.train.weights import MODULE_STATES


def write_checkpoint(run_dir: str, cfg: Config, *, step: int = 3, seed: int = 0, phase: int = 2) -> str:
    """A randomly initialised model (seeded) saved as ``{run_dir}/phase{phase}/checkpoints/step-{step}``."""
    torch.manual_seed(seed)
    cfg = dataclasses.replace(cfg, phase=phase)
    ckpt = os.path.join(run_dir, f"phase{phase}", "checkpoints", f"step-{step:09d}")
    os.makedirs(ckpt)
    buf = io.BytesIO()
    torch.save({"module": build_model(cfg.model).state_dict()}, buf)
    files = {"config.yaml": to_yaml(cfg).encode(), MODULE_STATES: buf.getvalue()}
    os.makedirs(os.path.join(ckpt, os.path.dirname(MODULE_STATES)))
    for name, data in files.items():
        with open(os.path.join(ckpt, name), "wb") as f:
            f.write(data)
    with open(os.path.join(ckpt, "COMMITTED"), "w") as f:
        json.dump({"step": step, "epoch": 1, "files": {k: len(v) for k, v in files.items()}}, f)
    return ckpt
