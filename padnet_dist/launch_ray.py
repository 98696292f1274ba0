"""The Ray launch layer: the only module that imports ray.

``run_on_ray`` trains one phase with Ray Train: a ``TorchTrainer`` starts ``num_workers`` workers, Ray creates
their process group, and each worker builds its ``World`` with ``world_from_ray_context`` and calls the same
``train(cfg, world)`` every launcher calls. Our checkpoints in ``run.dir`` are the source of truth for resume:
a worker group restarted after a failure (``FailureConfig(max_failures)``) and a re-submitted job both continue
from the newest committed checkpoint because ``run.resume=auto``. Ray's own checkpoint mechanism is not used;
Ray keeps only its run record under ``{run.dir}/ray/phase{p}`` (the ``RunConfig`` name and storage path), so
re-submitting the same command continues the same Ray run as well.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from padnet_dist.config import Config, StorageConfig, from_yaml_text, to_yaml
from padnet_dist.errors import UserError
from padnet_dist.launch import DEFAULT_MASTER_PORT
from padnet_dist.storage import join_url
from padnet_dist.storage.url import is_s3, local_path, split_s3
from padnet_dist.world import World

RAY_RECORD_DIR = "ray"  # below run.dir: Ray's run record (not our checkpoints)


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

    world_size, node_rank = context.get_world_size(), context.get_node_rank()
    if world_size > 1 and dist.is_initialized() and dist.get_world_size() == world_size:
        device = torch.device("cpu")
        if dist.get_backend() == "nccl":  # nccl reduces GPU tensors only
            device = torch.device("cuda", context.get_local_rank())
            torch.cuda.set_device(device)
        top = torch.tensor([node_rank], dtype=torch.int64, device=device)
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
        return int(top.item()) + 1
    local = max(1, context.get_local_world_size())
    return max(node_rank + 1, -(-world_size // local))


def _train_per_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train's per-worker loop: the config arrives as YAML text; the return value of rank 0 is the summary."""
    from padnet_dist.train import train

    cfg = from_yaml_text(loop_config["config_yaml"])
    world = world_from_ray_context()
    print(
        f"padnet-dist ray worker: rank {world.rank} of {world.world_size}, local rank {world.local_rank}, "
        f"node {world.node_rank} of {world.num_nodes}, pid {os.getpid()}, phase {cfg.phase}",
        flush=True,
    )
    summary = train(cfg, world)
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
    address: str = "",
    name: str = "",
    storage_path: str = "",
) -> dict[str, Any]:
    """Train phase ``cfg.phase`` on ``num_workers`` Ray Train workers; return rank 0's summary of ``train``.

    ``address``: the Ray cluster ("" = the one this job runs on: RAY_ADDRESS, else a running local head).
    ``name``/``storage_path``: Ray's run record, by default ``phase{p}`` below ``{run.dir}/ray``; the same pair
    continues the same Ray run. ``max_failures``: worker-group restarts after a worker dies; each restart
    resumes from the newest committed checkpoint in ``run.dir``.
    """
    if num_workers < 1:
        raise UserError(f"--num-workers {num_workers}: give at least 1 worker")
    if cpus_per_worker <= 0 or max_failures < 0:
        raise UserError("--cpus-per-worker must be > 0 and --max-failures >= 0")
    if use_gpu and cfg.engine.device == "cpu":
        raise UserError("--use-gpu with engine.device=cpu: drop --use-gpu or set engine.device=auto")
    if not use_gpu and cfg.engine.device == "cuda":
        raise UserError("engine.device=cuda without --use-gpu: Ray gives the workers no GPU; add --use-gpu")
    if cfg.run.resume == "never" and max_failures > 0:
        raise UserError("run.resume=never with --max-failures > 0: a restarted group would start over; use auto")
    cfg = prepare_config(cfg)

    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
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
            failure_config=FailureConfig(max_failures=max_failures),
        ),
    )
    started = time.perf_counter()
    try:
        result = trainer.fit()
    except Exception as e:
        user_error = _user_error_of(e)
        if user_error is not None:
            raise UserError(str(user_error)) from None
        raise
    summary = dict(result.return_value or {})
    summary["ray_wall_s"] = round(time.perf_counter() - started, 1)
    return summary


def _user_error_of(error: BaseException) -> UserError | None:
    """The first worker's ``UserError`` behind a Ray Train failure, so the CLI can print it as one line."""
    failures = getattr(error, "worker_failures", None) or {}
    for _, failure in sorted(failures.items()):
        seen: set[int] = set()
        cause: BaseException | None = failure
        while cause is not None and id(cause) not in seen:
            if isinstance(cause, UserError):
                return cause
            seen.add(id(cause))
            cause = getattr(cause, "cause", None) or cause.__cause__
    return None
