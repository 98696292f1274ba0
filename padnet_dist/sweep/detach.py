"""The sweep driver as a job of its own (``padnet-dist sweep --detach``), and the one-driver-per-run check.

``detach`` submits ``padnet-dist sweep ... --no-detach`` as a one-process ``task`` job on the backend (an ``sbatch`` of
``slurm/task.sh``, a Ray job, a background process group locally), as ``padnet-dist pipeline --detach`` does for one
run, and returns: a user on a login node need not keep a terminal open while the rows train. Each run is still
guarded by its own lease (``{run dir}/pipeline.lease``): a second driver of the same sweep refuses before it submits
or opens anything, naming the run and its holder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from padnet_dist.config import load_config
from padnet_dist.errors import UserError
from padnet_dist.pipeline.backend import JobSpec
from padnet_dist.pipeline.backends import backend_for
from padnet_dist.pipeline.driver import config_argv
from padnet_dist.pipeline.lease import describe, is_free, read_lease
from padnet_dist.storage import join_url
from padnet_dist.storage.url import is_s3
from padnet_dist.sweep.plan import SweepRun
from padnet_dist.sweep.runner import log


def driven_elsewhere_error(run: SweepRun, lease: dict, sweep_dir: str) -> UserError:
    return UserError(
        f"{run.name} of the sweep {sweep_dir} is driven by another sweep or pipeline, held by {describe(lease)}: "
        f"follow it with `padnet-dist status {run.run_dir}` and the tables in {sweep_dir}"
    )


def check_not_driven(runs: Sequence[SweepRun], sweep_dir: str, storage_cfg) -> None:
    """``UserError`` (one line) naming the first run whose lease another live coordinator holds."""
    now = time.time()
    for run in runs:
        held = read_lease(run.run_dir, storage_cfg)
        if held and not is_free(held, now):
            raise driven_elsewhere_error(run, held, sweep_dir)


def absolute_run_dir(overrides: Sequence[str], run_dir: str) -> list[str]:
    """``overrides`` with a relative local ``run.dir`` made absolute: Ray runs each job (and a detached driver) in an
    uploaded copy of this directory, where a relative run dir would be another, unseen one."""
    if is_s3(run_dir) or os.path.isabs(run_dir):
        return list(overrides)
    return [*(o for o in overrides if not o.startswith("run.dir=")), f"run.dir={os.path.abspath(run_dir)}"]


def sweep_argv(
    *,
    table: str | None,
    row_files: Sequence[str],
    config_files: Sequence[str],
    overrides: Sequence[str],
    backend: str,
    num_seeds: int,
    parallel: int | None,
) -> tuple[str, ...]:
    """The ``padnet-dist`` arguments that drive this sweep in the foreground (``--no-detach``)."""
    argv = ["sweep", *config_argv(config_files, overrides), "--seeds", str(num_seeds), "--backend", backend]
    if table:
        argv += ["--table", table]
    if parallel is not None:
        argv += ["--parallel", str(parallel)]
    if row_files:  # last: `--rows` takes every argument up to the next option
        argv += ["--rows", *row_files]
    return (*argv, "--no-detach")


def detach(
    runs: Sequence[SweepRun],
    *,
    argv: Sequence[str],
    config_files: Sequence[str],
    overrides: Sequence[str],
    backend: str,
) -> int:
    """Submit ``padnet-dist ARGV`` (the sweep's driver) as a task job on ``backend``; print its id and how to follow.

    Refuses in one line when another coordinator drives one of ``runs`` (it would stop at that run's lease anyway).
    """
    cfg = load_config(config_files, overrides)
    sweep_dir = cfg.run.dir
    check_not_driven(runs, sweep_dir, cfg.storage)
    log_url = join_url(sweep_dir, "logs", f"sweep.{time.strftime('%Y%m%d-%H%M%S')}.log")
    job_id = backend_for(backend, cfg).submit(JobSpec(name="sweep", kind="task", argv=tuple(argv), log_url=log_url))
    log(f"driver submitted ({backend} id {job_id}), log {log_url}")
    log(f"follow a run with `padnet-dist status RUN_DIR` (RUN_DIR: {join_url(sweep_dir, 'PRESET', 'seedN')}, "
        f"{len(runs)} runs); the tables in {sweep_dir} are rewritten as each run ends")  # fmt: skip
    log("if the driver dies, the same command (with or without --detach) takes the sweep over once its leases "
        f"expire (pipeline.lease_ttl_s={cfg.pipeline.lease_ttl_s:g} s)")  # fmt: skip
    return 0
