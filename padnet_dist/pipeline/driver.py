"""``padnet-dist pipeline``: from the command line's config to a coordinator holding the run's lease.

``drive`` runs the coordinator in this process; ``detach`` submits ``padnet-dist pipeline ... --no-detach`` as a
one-process job on the backend (an ``sbatch`` job, a Ray job, a background process group locally) and returns.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

from padnet_dist.cli import COMMANDS
from padnet_dist.config import Config, load_config
from padnet_dist.errors import UserError
from padnet_dist.pipeline import state as S
from padnet_dist.pipeline.backend import JobSpec
from padnet_dist.pipeline.backends import backend_for
from padnet_dist.pipeline.coordinator import Coordinator, Heartbeat, log
from padnet_dist.pipeline.graph import RunPlan
from padnet_dist.pipeline.lease import Lease, acquire, describe, is_free, read_lease
from padnet_dist.storage import join_url, storage_for


def config_argv(config_files: Sequence[str], overrides: Sequence[str]) -> list[str]:
    argv: list[str] = []
    for path in config_files:
        argv += ["--config", str(path)]
    return argv + list(overrides)


def plan_for(cfg: Config, argv: Sequence[str]) -> RunPlan:
    p = cfg.pipeline
    return RunPlan(
        run_dir=cfg.run.dir, config_argv=tuple(argv), checkpoint_every_steps=cfg.run.checkpoint_every_steps,
        eval_every=p.eval_every, phase2_init=p.phase2_init, best_metric=p.best_metric, baseline=p.baseline,
        nodes=p.nodes, ranks_per_node=p.ranks_per_node, gpus_per_rank=p.gpus_per_rank, cpus_per_rank=p.cpus_per_rank,
        eval_ranks=p.eval_ranks, with_report="report" in COMMANDS, phase1_from=p.phase1_from.rstrip("/"),
    )  # fmt: skip


def _run_defining(argv: Sequence[str]) -> list[str]:
    """The arguments that define what a run computes: all but the coordinator's own ``pipeline.*`` settings
    (``pipeline.phase1_from`` defines where phase 1 comes from, so it is one of them)."""
    return [a for a in argv if not a.startswith("pipeline.") or a.startswith("pipeline.phase1_from=")]


@dataclass
class OpenRun:
    """A run whose lease this process holds, with its coordinator ready to ``run()`` or to ``step()``."""

    cfg: Config
    coordinator: Coordinator
    heartbeat: Heartbeat
    lease: Lease

    def close(self) -> None:
        self.heartbeat.stop()
        self.lease.release()


def open_run(config_files: Sequence[str], overrides: Sequence[str], backend_name: str = "", label: str = "") -> OpenRun:
    """Take the run's lease and load (or start) its ``pipeline.json``; the caller ``close()``s it. ``label``
    prefixes the run's log lines (a sweep names each of its runs)."""
    cfg = load_config(config_files, overrides)
    name = backend_name or cfg.pipeline.backend
    argv = config_argv(config_files, overrides)
    storage = storage_for(cfg.run.dir, cfg.storage)
    backend = backend_for(name, cfg)
    lease = acquire(cfg.run.dir, cfg.pipeline.lease_ttl_s, cfg.storage)
    heartbeat = Heartbeat(lease)
    try:
        state = S.load_state(cfg.run.dir, storage)
        if state is None:
            state = S.new_state(cfg.run.dir, name, argv)
            log(f"new run {cfg.run.dir} on the {name} backend")
        else:
            _check_same_run(state, argv, name)
            log(f"continuing {cfg.run.dir}: {_summary(state)}")
        state["config"] = argv
        coordinator = Coordinator(plan_for(cfg, argv), backend, state, storage, cfg.pipeline.max_retries,
                                  cfg.pipeline.poll_every_s, storage_cfg=cfg.storage, label=label)  # fmt: skip
        coordinator.save()
    except BaseException:
        heartbeat.stop()
        lease.release()
        raise
    return OpenRun(cfg, coordinator, heartbeat, lease)


def drive(config_files: Sequence[str], overrides: Sequence[str], backend_name: str = "") -> int:
    """Run the pipeline of the config to completion here (0), or until a job fails out (1) or Ctrl-C (130)."""
    run = open_run(config_files, overrides, backend_name)
    # A detached coordinator is stopped with SIGTERM (scancel, ray job stop, the local runner): handled as Ctrl-C.
    previous = signal.signal(signal.SIGTERM, interrupt_on_sigterm)
    try:
        code = run.coordinator.run(run.heartbeat)
    finally:
        signal.signal(signal.SIGTERM, previous)
        run.close()
    if code == 0 and "report" in run.coordinator.jobs:
        print(f"report: {join_url(run.cfg.run.dir, 'report.html')}", flush=True)
    return code


def interrupt_on_sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def detach(config_files: Sequence[str], overrides: Sequence[str], backend_name: str = "") -> int:
    """Submit the coordinator itself as a job on the backend; print its id and how to follow it."""
    cfg = load_config(config_files, overrides)
    name = backend_name or cfg.pipeline.backend
    held = read_lease(cfg.run.dir, cfg.storage)
    if held and not is_free(held, time.time()):
        raise UserError(f"another coordinator drives {cfg.run.dir}: {describe(held)}; follow it with "
                        f"`padnet-dist status {cfg.run.dir}`")  # fmt: skip
    argv = ("pipeline", *config_argv(config_files, overrides), "--backend", name, "--no-detach")
    log_url = join_url(cfg.run.dir, "logs", f"coordinator.{time.strftime('%Y%m%d-%H%M%S')}.log")
    job_id = backend_for(name, cfg).submit(JobSpec(name="coordinator", kind="task", argv=argv, log_url=log_url))
    log(f"coordinator submitted ({name} id {job_id}), log {log_url}")
    log(f"follow it with `padnet-dist status {cfg.run.dir}`; if it dies, the same command takes over the run")
    return 0


def _check_same_run(state: dict, argv: Sequence[str], backend_name: str) -> None:
    if _run_defining(state["config"]) != _run_defining(argv):
        raise UserError(
            f"{state['run_dir']} was started with `padnet-dist pipeline {' '.join(state['config'])}`: continue it "
            "with the same --config files and overrides, or choose a new run.dir"
        )
    active = [n for n, r in state["jobs"].items() if r["state"] in (*S.ACTIVE_STATES, S.SUBMITTING)]
    if active and state["backend"] != backend_name:
        raise UserError(
            f"{state['run_dir']} has jobs on the {state['backend']} backend ({', '.join(active)}): continue with "
            f"--backend {state['backend']}"
        )
    state["backend"] = backend_name


def _summary(state: dict) -> str:
    counts: dict[str, int] = {}
    for rec in state["jobs"].values():
        counts[rec["state"]] = counts.get(rec["state"], 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no jobs yet"
