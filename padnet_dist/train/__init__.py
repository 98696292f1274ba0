"""Training: ``train(cfg, world)`` (loop.py), the DeepSpeed seam (engine.py), checkpoints, logging.

Imported lazily so that ``read_inference_checkpoint`` does not pull in DeepSpeed.
"""

from __future__ import annotations

from typing import Any


def train(cfg: Any, world: Any, *, hooks: Any = None) -> dict[str, Any]:
    """See ``padnet_dist.train.loop.train``."""
    from padnet_dist.train.loop import train as _train

    return _train(cfg, world, hooks=hooks)


def read_inference_checkpoint(url: str, storage_cfg: Any = None) -> tuple[Any, dict]:
    """See ``padnet_dist.train.checkpoint.read_inference_checkpoint``."""
    from padnet_dist.train.checkpoint import read_inference_checkpoint as _read

    return _read(url, storage_cfg)


__all__ = ["read_inference_checkpoint", "train"]
