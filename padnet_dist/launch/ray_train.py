"""The Ray launch layer: the only module that imports ray.

``run_on_ray`` trains one phase with Ray Train: a ``TorchTrainer`` starts ``num_workers`` workers, Ray creates
their process group, and each worker builds its ``World`` with ``world_from_ray_context`` and calls the same
``train(cfg, world)`` every launcher calls. Our checkpoints in ``run.dir`` are the source of truth for resume:
a worker group restarted after a failure (``FailureConfig(max_failures)``) or a node preemption
(``max_preemption_failures``) and a re-submitted job all continue from the newest committed checkpoint because
``run.resume=auto``. ``RayTrainHooks`` joins Ray to the loop: a preemption notice or a SIGTERM to a worker
process stops every rank after the current step with a committed checkpoint, and each commit is reported to
Ray (metrics plus a pointer to the committed checkpoint, never the weights) so the dashboard and ``Result``
show progress. Ray keeps its run record under ``{run.dir}/ray/phase{p}`` (the ``RunConfig`` name and storage
path), so re-submitting the same command continues the same Ray run as well.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from padnet_dist.config import Config, StorageConfig, from_yaml_text, to_yaml
from padnet_dist.errors import UserError
from padnet_dist.launch.env import DEFAULT_MASTER_PORT
from padnet_dist.launch.preflight import check_training_inputs
from padnet_dist.storage import join_url
from padnet_dist.storage.url import is_s3, local_path, split_s3
from padnet_dist.train.hooks import TrainHooks
from padnet_dist.world import World

RAY_RECORD_DIR = "ray"  # below run.dir: Ray's run record (not our checkpoints)
POINTER_FILE = "padnet_checkpoint.json"  # what a checkpoint reported to Ray holds: our committed checkpoint's URL
RECLAIM_WAIT_MARGIN_S = 120.0  # how long past the drain deadline a preempted rank waits for Ray to restart it
RAY_DEFAULT_PREEMPTION_DEADLINE_S = 120.0  # Ray Train's wait for a drain that names no deadline


def world_from_train_context(context: Any, *, num_nodes: int, environ: Mapping[str, str]) -> World:
    """The ``World`` of a Ray Train worker from its train context (``ray.train.get_context()``).

    ``context`` answers get_world_rank/get_local_rank/get_world_size/get_node_rank. The master address and port
    are those Ray's ``TorchConfig`` exported (MASTER_ADDR, MASTER_PORT) for the process group it created.
    """
    return World(
        rank=context.get_world_rank(),
        local_rank=context.get_local_rank(),
        world_size=context.get_world_size(),
        node_rank=context.get_node_rank(),
        num_nodes=num_nodes,
        master_addr=environ.get("MASTER_ADDR") or "127.0.0.1",
        master_port=int(environ.get("MASTER_PORT") or DEFAULT_MASTER_PORT),
    )


def world_from_ray_context(context: Any = None, *, environ: Mapping[str, str] | None = None) -> World:
    """The ``World`` of this Ray Train worker; call it on every worker at the same point (it may all-reduce).

    Ray numbers nodes 0..n-1 in placement order, so the number of nodes is the largest node rank + 1 over all
    workers: one all-reduce over the process group Ray created. Without a group (a single worker, or a
    ``context`` given for a test) it is inferred as ``ceil(world_size / local_world_size)``, exact when every
    node holds the same number of workers.
    """
    import ray.train

    context = context if context is not None else ray.train.get_context()
    environ = os.environ if environ is None else environ
    num_nodes = _count_nodes(context)
    return world_from_train_context(context, num_nodes=num_nodes, environ=environ)


def _count_nodes(context: Any) -> int:
    import torch
    import torch.distributed as dist

    from padnet_dist.collectives import max_over_ranks

    world_size, node_rank = context.get_world_size(), context.get_node_rank()
    if world_size > 1 and dist.is_initialized() and dist.get_world_size() == world_size:
        if dist.get_backend() == "nccl":  # nccl reduces GPU tensors only: on this worker's GPU
            torch.cuda.set_device(torch.device("cuda", context.get_local_rank()))
        return max_over_ranks(node_rank) + 1
    local = max(1, context.get_local_world_size())
    return max(node_rank + 1, -(-world_size // local))


class TrainingInterrupted(RuntimeError):
    """A worker group stopped early with a committed checkpoint; Ray restarts it and it resumes there."""


_sigterm_seen = threading.Event()  # set by this process's SIGTERM handler, read by the training thread
_replaced_sigterm_handlers: list[Any] = []  # Ray's handler while ours is installed


def _note_sigterm(_signum: int, _frame: object) -> None:
    _sigterm_seen.set()


def _install_sigterm_note() -> None:
    """Make SIGTERM set ``_sigterm_seen`` instead of ending the process, until ``_restore_sigterm``.

    Runs on the worker actor's main thread (Python installs signal handlers there only). Ray's own handler
    there would raise ``SystemExit`` and kill the rank mid-step, losing everything since the last commit.
    """
    _replaced_sigterm_handlers.append(signal.signal(signal.SIGTERM, _note_sigterm))


def _restore_sigterm() -> None:
    while _replaced_sigterm_handlers:
        signal.signal(signal.SIGTERM, _replaced_sigterm_handlers.pop())


def _on_actor_main_thread(fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` on this Ray Train worker's main thread and return its result.

    The training loop runs in a thread of the worker actor; the actor's main thread is idle meanwhile and
    runs the actor's methods. ``execute(fn)`` is Ray Train's own method for running a function there (Ray
    2.60; ``tests/cluster/test_ray_train.py`` pins it by sending a worker SIGTERM).
    """
    import ray

    return ray.get(ray.get_runtime_context().current_actor.execute.remote(fn, *args))


class RayTrainHooks(TrainHooks):
    """Ray Train's part in the loop: preemption notices and SIGTERM stop the run; commits are reported.

    Build it in the training function (a worker's training thread) of every rank. ``should_stop`` asks Ray
    for a preemption notice (``ray.train.get_preemption_info()``, a barrier: one call per step on every rank)
    and reads whether this process got SIGTERM. ``on_commit`` reports the metrics and, from rank 0, a tiny
    checkpoint directory holding our checkpoint's URL (``POINTER_FILE``), so Ray's ``Result.checkpoint`` and
    ``Result.metrics`` follow our commits. ``close()`` gives SIGTERM back to Ray.
    """

    def __init__(self, *, rank: int) -> None:
        self.rank = rank
        self.preemption: Any = None  # Ray's PreemptionInfo, the same on every rank once seen
        self.notice_monotonic: float | None = None  # when this rank first saw a preemption or SIGTERM
        self._sigterm_noted = False
        try:
            _on_actor_main_thread(_install_sigterm_note)
            self._sigterm_noted = True
        except AttributeError as e:  # a Ray without RayTrainWorker.execute: train on, without a graceful SIGTERM
            print(f"padnet-dist ray worker: rank {rank}: SIGTERM will end this rank at once ({e})", flush=True)

    def should_stop(self) -> bool:
        import ray.train

        info = ray.train.get_preemption_info()
        if info is not None and self.preemption is None:
            self.preemption = info
            print(
                f"padnet-dist ray worker: rank {self.rank}: preemption notice for ranks {info.preempted_ranks} "
                f"(deadline in {_seconds_until(info.deadline_ms):.1f} s): committing after this step",
                flush=True,
            )
        if _sigterm_seen.is_set() and self.notice_monotonic is None:
            print(f"padnet-dist ray worker: rank {self.rank}: SIGTERM: committing after this step", flush=True)
        stop = info is not None or _sigterm_seen.is_set()
        if stop and self.notice_monotonic is None:
            self.notice_monotonic = time.monotonic()
        return stop

    def on_commit(self, url: str, step: int, metrics: dict[str, float]) -> None:
        import ray.train

        metrics = {**metrics, "step": step, "checkpoint_url": url}
        if self.rank != 0:
            ray.train.report(metrics)  # every rank reports as often as rank 0: report() is a barrier
            return
        with tempfile.TemporaryDirectory(prefix="padnet-ray-pointer-") as pointer_dir:
            with open(os.path.join(pointer_dir, POINTER_FILE), "w", encoding="utf-8") as f:
                json.dump({"checkpoint": url, "step": step}, f)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(pointer_dir))
        if self.notice_monotonic is not None:
            print(
                f"padnet-dist ray worker: rank 0: committed step {step} {time.monotonic() - self.notice_monotonic:.1f}"
                " s after the stop notice",
                flush=True,
            )

    def close(self) -> None:
        if self._sigterm_noted:
            _on_actor_main_thread(_restore_sigterm)
            self._sigterm_noted = False

    def wait_for_reclaim(self) -> None:
        """Wait, after the preemption commit, for Ray to tear this group down; raise if it never does.

        Returning would end the run as finished (Ray Train treats a clean return as success even during a
        preemption) and raising would spend ``max_failures``; waiting lets Ray restart the group at the drain
        deadline as a preemption, counted against ``max_preemption_failures``.
        """
        wait_s = _seconds_until(self.preemption.deadline_ms) if self.preemption.deadline_ms else 0.0
        wait_s = max(wait_s, 0.0 if self.preemption.deadline_ms else RAY_DEFAULT_PREEMPTION_DEADLINE_S)
        time.sleep(wait_s + RECLAIM_WAIT_MARGIN_S)
        raise TrainingInterrupted(
            f"rank {self.rank}: preempted ranks {self.preemption.preempted_ranks} were not reclaimed by the drain "
            "deadline; stopping with the committed checkpoint (a restart resumes there)"
        )


def _seconds_until(deadline_ms: int | None) -> float:
    return float("inf") if not deadline_ms else deadline_ms / 1000.0 - time.time()


def _train_per_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train's per-worker loop: the config arrives as YAML text; the return value of rank 0 is the summary.

    A run stopped early (preemption notice, SIGTERM) has committed its checkpoint; it must not return, or Ray
    would record the run as finished. After a preemption notice every rank waits for the reclaim (Ray then
    restarts the group as a preemption); after a SIGTERM every rank raises ``TrainingInterrupted`` (a failure:
    Ray restarts the group if ``max_failures`` allows). Either way the new group resumes from that checkpoint.
    """
    from padnet_dist.train import train

    cfg = from_yaml_text(loop_config["config_yaml"])
    world = world_from_ray_context()
    print(
        f"padnet-dist ray worker: rank {world.rank} of {world.world_size}, local rank {world.local_rank}, "
        f"node {world.node_rank} of {world.num_nodes}, pid {os.getpid()}, phase {cfg.phase}",
        flush=True,
    )
    hooks = RayTrainHooks(rank=world.rank)
    try:
        summary = train(cfg, world, hooks=hooks)
    finally:
        hooks.close()
    stop_step = min(summary["total_steps"], cfg.run.max_steps or summary["total_steps"])
    if summary["stopped_by_signal"] and summary["step"] < stop_step:
        print(f"padnet-dist ray worker: rank {world.rank} stopped at step {summary['step']}, committed", flush=True)
        if hooks.preemption is not None:
            hooks.wait_for_reclaim()
        raise TrainingInterrupted(
            f"rank {world.rank}: stopped by SIGTERM after committing step {summary['step']} "
            f"({summary['checkpoint']}); a restart resumes there"
        )
    print(f"padnet-dist ray worker: rank {world.rank} done at step {summary['step']}", flush=True)
    return summary


def prepare_config(cfg: Config, *, cwd: str | None = None) -> Config:
    """``cfg`` with relative local input paths made absolute against the driver's directory ``cwd``.

    Ray workers do not run in the submitting directory, so an existing relative manifest, weights file or
    resume checkpoint is resolved here (every node must see it at that path: a shared filesystem, or use
    s3://). A relative ``run.dir`` is refused: written into a job's unpacked working directory it would be lost.
    """
    import dataclasses

    cwd = cwd or os.getcwd()
    if not is_s3(cfg.run.dir) and not Path(local_path(cfg.run.dir)).is_absolute():
        raise UserError(
            f"run.dir={cfg.run.dir} is relative: Ray workers do not share the submitting directory; give an "
            "absolute path that every node mounts, or s3://bucket/prefix"
        )

    def absolute(url: str) -> str:
        if not url or "://" in url or Path(url).is_absolute() or not (Path(cwd) / url).exists():
            return url
        return str((Path(cwd) / url).resolve())

    data = dataclasses.replace(
        cfg.data, train_manifest=absolute(cfg.data.train_manifest), val_manifest=absolute(cfg.data.val_manifest)
    )
    model = dataclasses.replace(cfg.model, pretrained=absolute(cfg.model.pretrained))
    run = dataclasses.replace(cfg.run, resume=absolute(cfg.run.resume))
    return dataclasses.replace(cfg, data=data, model=model, run=run)


def ray_storage(storage_url: str, storage_cfg: StorageConfig) -> tuple[str, Any]:
    """``(storage_path, storage_filesystem)`` for Ray's ``RunConfig`` from a local path or ``s3://`` URL.

    An S3-compatible endpoint (``storage.endpoint_url``) needs a pyarrow ``S3FileSystem`` and a path of
    ``bucket/prefix`` without the scheme; plain AWS takes the ``s3://`` URL. Credentials: the AWS chain.
    """
    if not is_s3(storage_url):
        return str(Path(local_path(storage_url)).resolve()), None
    if not storage_cfg.endpoint_url:
        return storage_url, None
    from pyarrow import fs

    endpoint = urlparse(storage_cfg.endpoint_url)
    if not endpoint.netloc:
        raise UserError(f"storage.endpoint_url={storage_cfg.endpoint_url} is not a URL: write http://host:port")
    bucket, key = split_s3(storage_url)
    filesystem = fs.S3FileSystem(
        endpoint_override=endpoint.netloc,
        scheme=endpoint.scheme or "https",
        region=storage_cfg.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "",
    )
    return join_url(bucket, key), filesystem


def run_on_ray(
    cfg: Config,
    *,
    num_workers: int,
    use_gpu: bool = False,
    cpus_per_worker: float = 1.0,
    max_failures: int = 0,
    max_preemption_failures: int = -1,
    address: str = "",
    name: str = "",
    storage_path: str = "",
) -> dict[str, Any]:
    """Train phase ``cfg.phase`` on ``num_workers`` Ray Train workers; return rank 0's summary of ``train``.

    ``address``: the Ray cluster ("" = the one this job runs on: RAY_ADDRESS, else a running local head).
    ``name``/``storage_path``: Ray's run record, by default ``phase{p}`` below ``{run.dir}/ray``; the same pair
    continues the same Ray run. ``max_failures``: worker-group restarts after a worker dies or is stopped by
    SIGTERM; ``max_preemption_failures``: restarts after a node of the run is preempted (-1: no limit). Each
    restart resumes from the newest committed checkpoint in ``run.dir``.
    """
    if num_workers < 1:
        raise UserError(f"--num-workers {num_workers}: give at least 1 worker")
    if cpus_per_worker <= 0 or max_failures < 0:
        raise UserError("--cpus-per-worker must be > 0 and --max-failures >= 0")
    if max_preemption_failures < -1:
        raise UserError(f"--max-preemption-failures {max_preemption_failures}: give -1 (no limit), 0 or more")
    if use_gpu and cfg.engine.device == "cpu":
        raise UserError("--use-gpu with engine.device=cpu: drop --use-gpu or set engine.device=auto")
    if not use_gpu and cfg.engine.device == "cuda":
        raise UserError("engine.device=cuda without --use-gpu: Ray gives the workers no GPU; add --use-gpu")
    if cfg.run.resume != "auto" and (max_failures > 0 or max_preemption_failures != 0):
        raise UserError(
            f"run.resume={cfg.run.resume} with restarts: a restarted group would not continue from its own "
            "checkpoints; use run.resume=auto, or --max-failures 0 --max-preemption-failures 0"
        )
    cfg = prepare_config(cfg)
    check_training_inputs(cfg)  # the storage lookups, after the argument checks and before Ray starts anything

    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or "auto"
        if address.startswith(("http://", "https://")):
            raise UserError(
                f"Ray address {address} is the dashboard's (for `ray job submit`, see cluster/ray_submit.sh): "
                "give the cluster's HOST:6379, or run inside a Ray job"
            )
        try:
            ray.init(address=address, log_to_driver=True)
        except ConnectionError as e:
            raise UserError(
                f"no Ray cluster at {address} ({str(e).splitlines()[0]}): run inside `ray job submit`, "
                "start one with `ray start --head`, or pass --address"
            ) from None

    backend = cfg.engine.backend if cfg.engine.backend != "auto" else ("nccl" if use_gpu else "gloo")
    path, filesystem = ray_storage(storage_path or join_url(cfg.run.dir, RAY_RECORD_DIR), cfg.storage)
    trainer = TorchTrainer(
        _train_per_worker,
        train_loop_config={"config_yaml": to_yaml(cfg)},
        torch_config=TorchConfig(backend=backend),
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker}
        ),
        run_config=RunConfig(
            name=name or f"phase{cfg.phase}",
            storage_path=path,
            storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=max_failures, max_preemption_failures=max_preemption_failures),
            # Ray keeps pointers to our commits (a few bytes each), as many as run.keep_last keeps checkpoints
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.run.keep_last),
        ),
    )
    started = time.perf_counter()
    try:
        result = trainer.fit()
    except Exception as e:
        user_error = _worker_error_of(e, UserError)
        if user_error is not None:
            raise UserError(str(user_error)) from None
        interrupted = _worker_error_of(e, TrainingInterrupted)
        if interrupted is not None:  # committed, and Ray had no restart left: a new submission resumes there
            raise TrainingInterrupted(str(interrupted)) from None
        raise
    summary = dict(result.return_value or {})
    summary["ray_wall_s"] = round(time.perf_counter() - started, 1)
    summary["ray_result"] = {"path": result.path, "metrics": result.metrics, "checkpoint": _pointer(result)}
    return summary


def _pointer(result: Any) -> str | None:
    """Our committed checkpoint that Ray's ``Result.checkpoint`` points to (``POINTER_FILE``), if any."""
    if result.checkpoint is None:
        return None
    with result.checkpoint.as_directory() as directory:
        path = Path(directory) / POINTER_FILE
        return json.loads(path.read_text())["checkpoint"] if path.exists() else None


def _worker_error_of(error: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first worker's exception of type ``kind`` behind a Ray Train failure (a ``UserError`` for the CLI to
    print as one line, a ``TrainingInterrupted`` for exit 75)."""
    failures = getattr(error, "worker_failures", None) or {}
    for _, failure in sorted(failures.items()):
        seen: set[int] = set()
        cause: BaseException | None = failure
        while cause is not None and id(cause) not in seen:
            if isinstance(cause, kind):
                return cause
            seen.add(id(cause))
            cause = getattr(cause, "cause", None) or cause.__cause__
    return None
