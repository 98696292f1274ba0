"""Engine, storage, run and evaluation sections of the config."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "gloo", "nccl")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_NCCL_NAME = re.compile(r"^NCCL_[A-Z0-9_]+$")
ON_RESIZE = ("keep_global_batch", "keep_grad_accum")


@dataclass(kw_only=True)
class EngineConfig:
    """DeepSpeed and device settings. GPU choices (nccl, bf16, sync BN) are the cluster presets'.

    Gradient communication is DeepSpeed's (README "Performance"): ``reduce_bucket_size`` and
    ``allgather_bucket_size`` (elements) size the ZeRO 1-3 buckets, ``overlap_comm`` reduces buckets during backward
    (ZeRO 1-2; on CPU gloo is synchronous, so there is nothing to overlap with). ZeRO 0 all-reduces after backward.
    ``comm_timing`` adds the per-step all-reduce seconds (DeepSpeed's timers) to the step log records; a diagnostic
    mode: DeepSpeed then also prints its timer breakdown on rank 0 every step (and syncs the GPU to time it).

    GPU path (each ignored with a one-time warning on CPU, where it cannot run or does not pay): ``channels_last``
    (NHWC model and input: cuDNN's fastest convolutions), ``compile`` (``torch.compile`` of the model in place,
    ``compile_mode``; a graph that fails to compile runs eagerly), ``cudnn_benchmark`` (autotuned convolutions;
    off under ``deterministic``), ``nccl_env`` (``NCCL_*`` variables set in each rank before the process group,
    e.g. ``{NCCL_IB_DISABLE: "1"}``; a variable already set in the job's environment wins), ``peak_tflops`` (the
    device's peak dense TFLOP/s at the training precision, e.g. 989 for an H100 SXM in bf16: with it the log
    reports model FLOP utilisation). bf16 is torch autocast over fp32 weights (``precision``).
    """

    device: str = "auto"  # auto: cuda when available, else cpu
    backend: str = "auto"  # auto: nccl on cuda, gloo on cpu
    precision: str = "fp32"
    zero_stage: int = 0
    sync_batchnorm: bool = False  # needs cuda; plain BatchNorm on cpu
    deterministic: bool = False
    reduce_bucket_size: int = 500_000_000  # elements per gradient reduction bucket (ZeRO 1-3)
    allgather_bucket_size: int = 500_000_000  # elements per parameter all-gather bucket (ZeRO 1-2)
    overlap_comm: bool = False  # reduce gradient buckets during backward (ZeRO 1-2)
    comm_timing: bool = False  # log all-reduce seconds per step (DeepSpeed timers; a device sync on GPU)
    channels_last: bool = False  # cuda only
    compile: bool = False  # cuda only: torch.compile of the model, eager where a graph fails to compile
    compile_mode: str = "default"
    cudnn_benchmark: bool = True  # cuda only; ignored when deterministic
    nccl_env: dict[str, str] = field(default_factory=dict)  # NCCL_* -> value, set before the process group
    peak_tflops: float = 0.0  # device peak at the training precision; 0 = unknown (no MFU in the log)

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
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"engine.compile_mode='{self.compile_mode}' is not one of {', '.join(COMPILE_MODES)}")
        if self.reduce_bucket_size < 1 or self.allgather_bucket_size < 1:
            raise ValueError("engine.reduce_bucket_size and engine.allgather_bucket_size must be >= 1 element")
        if self.peak_tflops < 0:
            raise ValueError("engine.peak_tflops must be >= 0 (0 = unknown: no model FLOP utilisation in the log)")
        bad = [name for name in self.nccl_env if not _NCCL_NAME.match(str(name))]
        if bad:
            raise ValueError(
                f"engine.nccl_env has {', '.join(map(str, bad))}: only NCCL_* variables (upper case) pass through"
            )


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
    # true: training goes on while a checkpoint is written and uploaded (it stops only for an in-memory snapshot,
    # which keeps one copy of the rank's model and optimizer state in CPU memory); false: it waits for the commit
    async_checkpoints: bool = True
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
