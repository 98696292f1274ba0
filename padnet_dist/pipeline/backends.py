"""The backends by name: ``local`` here; ``slurm`` and ``ray`` from their modules, imported only when chosen.

A backend module other than ``local`` exposes ``make_backend(cfg: Config) -> Backend`` (the run's config: its
``pipeline`` section sizes the jobs, ``run.dir`` says where logs go).
"""

from __future__ import annotations

import hashlib
import importlib
import os

from padnet_dist.config import Config
from padnet_dist.config.pipeline import PIPELINE_BACKENDS
from padnet_dist.errors import UserError
from padnet_dist.pipeline.backend import Backend
from padnet_dist.storage import join_url
from padnet_dist.storage.url import is_s3, local_path

MODULES = {"slurm": "padnet_dist.pipeline.slurm", "ray": "padnet_dist.pipeline.ray"}


def local_jobs_dir(run_dir: str) -> str:
    """Where the local backend keeps its job records: beside the run, or for a bucket run in the user's cache."""
    if not is_s3(run_dir):
        return local_path(join_url(run_dir, "jobs"))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "padnet-dist", "jobs", hashlib.sha1(run_dir.encode()).hexdigest()[:12])


def backend_for(name: str, cfg: Config) -> Backend:
    if name not in PIPELINE_BACKENDS:
        raise UserError(f"--backend {name}: choose one of {', '.join(PIPELINE_BACKENDS)}")
    if name == "local":
        from padnet_dist.pipeline.local import LocalBackend

        return LocalBackend(local_jobs_dir(cfg.run.dir), storage=cfg.storage)
    try:
        module = importlib.import_module(MODULES[name])
    except ModuleNotFoundError as e:
        if e.name != MODULES[name]:
            raise
        raise UserError(
            f"--backend {name} is not available in this build ({MODULES[name]} is missing): use --backend local"
        ) from None
    return module.make_backend(cfg)
