"""Cheap checks of a training run's inputs, made before anything expensive starts.

A missing manifest or an unusable run dir would otherwise surface only after DeepSpeed built its ops, the ranks
were started and the process group formed (tens of seconds to minutes on a cluster), and once per rank.
"""

from __future__ import annotations

import os
from pathlib import Path

from padnet_dist.config import Config
from padnet_dist.errors import UserError
from padnet_dist.storage import join_url, storage_for
from padnet_dist.storage.base import StorageError
from padnet_dist.storage.url import is_s3, local_path

PROBE_NAME = ".padnet-preflight"  # a key looked up (never written) to learn whether the run dir's bucket answers


def check_training_inputs(cfg: Config) -> None:
    """Raise ``UserError`` (one line: the setting, the URL, the fix) if a manifest is missing or ``run.dir`` unusable.

    Needs only storage reads: a local stat or an S3 HEAD per URL; imports neither torch.distributed nor DeepSpeed.
    """
    if not cfg.data.train_manifest:
        raise UserError(
            "data.train_manifest is not set: point it at a train.manifest.json written by `padnet-dist shard`"
        )
    for key, url in (("data.train_manifest", cfg.data.train_manifest), ("data.val_manifest", cfg.data.val_manifest)):
        if url and not _exists(url, cfg, key):
            raise UserError(f"{key}={url} does not exist: write the shards with `padnet-dist shard ...` or fix {key}")
    _check_run_dir(cfg)


def _exists(url: str, cfg: Config, key: str) -> bool:
    try:
        return storage_for(url, cfg.storage).exists(url)
    except StorageError as e:
        raise UserError(f"{key}={url} cannot be read ({e}): check storage.endpoint_url and credentials") from None


def _check_run_dir(cfg: Config) -> None:
    run_dir = cfg.run.dir
    if is_s3(run_dir):
        _exists(join_url(run_dir, PROBE_NAME), cfg, "run.dir")
        return
    path = Path(local_path(run_dir)).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"run.dir={run_dir}: {existing} is a file, not a directory: choose another run.dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"run.dir={run_dir}: {existing} is not writable by this user: choose another run.dir")
