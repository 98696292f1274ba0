"""Engine, storage, run and evaluation sections of the config."""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "gloo", "nccl")
ON_RESIZE = ("keep_global_batch", "keep_grad_accum")


@dataclass(kw_only=True)
class EngineConfig:
    """DeepSpeed and device settings. GPU choices (nccl, bf16, sync BN) are the cluster presets'."""

    device: str = "auto"  # auto: cuda when available, else cpu
    backend: str = "auto"  # auto: nccl on cuda, gloo on cpu
    precision: str = "fp32"
    zero_stage: int = 0
    sync_batchnorm: bool = False  # needs cuda; plain BatchNorm on cpu
    deterministic: bool = False

    def __post_init__(self) -> None:
        for key, value, allowed in (
            ("engine.device", self.device, DEVICES),
            ("engine.backend", self.backend, BACKENDS),
            ("engine.precision", self.precision, PRECISIONS),
        ):
            if value not in allowed:
                raise ValueError(f"{key}='{value}' is not one of {', '.join(allowed)}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError("engine.zero_stage must be 0, 1, 2 or 3")


@dataclass(kw_only=True)
class StorageConfig:
    """Object storage. Credentials come from the standard AWS chain (env, profile, role), never from here."""

    endpoint_url: str = ""  # "" = AWS; set for MinIO, Ceph or any S3-compatible store
    region: str = ""
    max_attempts: int = 8  # retries of transient errors, with exponential backoff
    multipart_threshold_mb: int = 64

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.multipart_threshold_mb < 5:
            raise ValueError("storage.max_attempts must be >= 1 and storage.multipart_threshold_mb >= 5")


@dataclass(kw_only=True)
class RunConfig:
    """Where a run writes (local path or s3://), checkpointing and logging cadence."""

    dir: str = "runs/default"
    resume: str = "auto"  # auto: newest committed checkpoint of this run and phase; never; or a checkpoint URL
    # resuming on another number of ranks: keep_global_batch adjusts optim.grad_accum_steps so that batch x accumulation
    # x ranks stays the checkpoint's; keep_grad_accum keeps the configured accumulation (the global batch changes)
    on_resize: str = "keep_global_batch"
    keep_last: int = 3
    checkpoint_every_steps: int = 500
    log_every_steps: int = 10
    eval_every_epochs: int = 0  # 0: evaluate only at the end of the phase
    max_steps: int = 0  # stop a phase after this many optimiser steps (0 = run all epochs)
    tensorboard: bool = True
    progress_bar: bool = True  # a bar on a terminal; a plain line per logged step when stderr is not one
    log_upload_every_s: float = (
        60.0  # s3:// run dirs: publish logs and TensorBoard files this often (0: with checkpoints only)
    )

    def __post_init__(self) -> None:
        if self.on_resize not in ON_RESIZE:
            raise ValueError(f"run.on_resize='{self.on_resize}' is not one of {', '.join(ON_RESIZE)}")
        if self.keep_last < 1:
            raise ValueError("run.keep_last must be >= 1")
        if self.log_upload_every_s < 0:
            raise ValueError("run.log_upload_every_s must be >= 0 (0 publishes logs with checkpoints only)")
        if self.checkpoint_every_steps < 0 or self.log_every_steps < 1 or self.max_steps < 0:
            raise ValueError("run.checkpoint_every_steps and run.max_steps must be >= 0, run.log_every_steps >= 1")
