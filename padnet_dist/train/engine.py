"""The DeepSpeed seam: the only module that imports deepspeed.

Everything DeepSpeed needs is derived here from our config and the ``World``: device and backend,
the process group, the DeepSpeed config dict, the wrapped engine, mixed precision, and saving,
loading and consolidating engine state.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import deepspeed
import torch
import torch.distributed as dist
from torch import nn

from padnet_dist.config import Config, EngineConfig
from padnet_dist.distributed import join_process_group
from padnet_dist.errors import UserError
from padnet_dist.world import World

ENGINE_TAG = "engine"  # the sub-directory of a checkpoint holding DeepSpeed's files


def init_distributed(world: World, backend: str, timeout_s: float = 1800.0) -> None:
    """Join (or adopt) the job's process group, then let DeepSpeed use it."""
    join_process_group(world, backend, timeout_s)
    deepspeed.init_distributed(dist_backend=backend, dist_init_required=False)


def set_determinism(deterministic: bool, device: torch.device, cudnn_benchmark: bool = True) -> None:
    """Bitwise-reproducible kernels when asked (slower), else the fastest ones (cuDNN autotuning on GPUs when
    ``cudnn_benchmark``)."""
    if deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = cudnn_benchmark and device.type == "cuda"


def gpu_path(engine_cfg: EngineConfig, device: torch.device, pin_memory: bool) -> dict[str, Any]:
    """The GPU-path settings a run on ``device`` uses (all off on CPU, where they cannot run or do not pay).

    Keys: channels_last, compile, compile_mode, cudnn_benchmark, pin_memory, autocast (dtype name or None: bf16
    autocast over fp32 weights), nccl_env (the NCCL_* variables passed to the ranks). Logged at start-up and
    checked by the CPU tests for a GPU preset.
    """
    cuda = device.type == "cuda"
    return {
        "channels_last": engine_cfg.channels_last and cuda,
        "compile": engine_cfg.compile and cuda,
        "compile_mode": engine_cfg.compile_mode,
        "cudnn_benchmark": engine_cfg.cudnn_benchmark and cuda and not engine_cfg.deterministic,
        "pin_memory": pin_memory and cuda,
        "autocast": "bfloat16" if engine_cfg.precision == "bf16" else None,
        "nccl_env": dict(engine_cfg.nccl_env) if cuda else {},
    }


def warn_cpu_only_settings(engine_cfg: EngineConfig, device: torch.device) -> None:
    """One warning naming the GPU-path settings a CPU run ignores."""
    if device.type == "cuda":
        return
    ignored = [name for name in ("channels_last", "compile") if getattr(engine_cfg, name)]
    ignored += ["nccl_env"] if engine_cfg.nccl_env else []
    if ignored:
        warnings.warn(f"engine.{', engine.'.join(ignored)} ignored on CPU (GPU path only)", stacklevel=2)


def apply_nccl_env(nccl_env: dict[str, str]) -> None:
    """Set ``NCCL_*`` variables for this rank's process group (before it is created); the job's own win."""
    for name, value in nccl_env.items():
        os.environ.setdefault(str(name), str(value))


def check_precision(engine_cfg: EngineConfig, device: torch.device) -> None:
    """Refuse a precision the device cannot run: fp16 on CPU, bf16 on GPUs older than Ampere."""
    if engine_cfg.precision == "fp16" and device.type != "cuda":
        raise UserError("engine.precision=fp16 is not supported on CPU: use fp32 (or bf16, slow on CPUs without AMX)")
    if engine_cfg.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("engine.precision=bf16 is not supported by this GPU: use fp16 or fp32")


def deepspeed_config(cfg: Config, world: World, device: torch.device) -> dict[str, Any]:
    """The DeepSpeed config dict for ``cfg`` (batch sizes per rank, accumulation, clipping, ZeRO and its
    communication buckets, fp16, the timers ``engine.comm_timing`` reads).

    bf16 is not DeepSpeed's: it runs under torch autocast with fp32 weights (see ``autocast``), because
    DeepSpeed's bf16 casts BatchNorm parameters but not its buffers.
    """
    micro = cfg.data.batch_size
    accum = cfg.optim.grad_accum_steps
    zero = cfg.engine.zero_stage
    return {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "train_batch_size": micro * accum * world.world_size,
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": {
            "stage": zero,
            "reduce_bucket_size": cfg.engine.reduce_bucket_size,
            "allgather_bucket_size": cfg.engine.allgather_bucket_size,
            "overlap_comm": cfg.engine.overlap_comm,
        },
        "zero_allow_untested_optimizer": zero > 0,
        "fp16": {"enabled": cfg.engine.precision == "fp16" and device.type == "cuda"},
        "bf16": {"enabled": False},  # bf16 is autocast over fp32 weights (see above), never DeepSpeed's casting
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": cfg.engine.comm_timing,
    }


def prepare_model(model: nn.Module, engine_cfg: EngineConfig, device: torch.device) -> nn.Module:
    """Move to ``device``; SyncBatchNorm across ranks, channels-last memory and ``torch.compile`` on GPUs only
    (SyncBatchNorm raises on CPU tensors)."""
    if engine_cfg.sync_batchnorm and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif engine_cfg.sync_batchnorm:
        warnings.warn("engine.sync_batchnorm is ignored on CPU: plain BatchNorm is used", stacklevel=2)
    settings = gpu_path(engine_cfg, device, pin_memory=False)
    model = model.to(device, memory_format=torch.channels_last) if settings["channels_last"] else model.to(device)
    if settings["compile"]:
        compile_model(model, mode=engine_cfg.compile_mode)
    return model


def compile_model(model: nn.Module, *, mode: str = "default", backend: Any = "inductor") -> bool:
    """``torch.compile`` ``model`` in place (its state dict keeps its names, so checkpoints do not change).

    The fallback: where dynamo is not supported (this Python, platform) the model stays eager and this returns
    False with a warning; a graph that fails to compile later (a backend error, an unsupported operator) runs
    eagerly instead of failing the run (dynamo's ``suppress_errors``), with torch's own warning.
    """
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        warnings.warn("engine.compile: torch.compile is not supported here; the model runs eagerly", stacklevel=2)
        return False
    torch._dynamo.config.suppress_errors = True
    kwargs = {"backend": backend} if backend != "inductor" else {"mode": mode}
    model.compile(**kwargs)
    return True


def comm_seconds(engine) -> float | None:
    """Seconds this rank spent in the gradient all-reduce after the last backward (DeepSpeed's ``bwd_allreduce``
    micro-step timer; ``engine.comm_timing``), or None when timing is off. Call it between backward and step."""
    if not engine.wall_clock_breakdown():
        return None
    from deepspeed.utils.timer import BACKWARD_REDUCE_MICRO_TIMER

    # Read before engine.step(): with its timers on, DeepSpeed prints and resets them there, every step.
    return engine.timers(BACKWARD_REDUCE_MICRO_TIMER).elapsed(reset=True) / 1000.0


def make_optimizer(params: Iterable[nn.Parameter], lr: float, momentum: float, weight_decay: float):
    """SGD as in the paper (§4.1): momentum 0.99, weight decay 5e-4."""
    return torch.optim.SGD(list(params), lr=lr, momentum=momentum, weight_decay=weight_decay)


def wrap(model: nn.Module, optimizer: torch.optim.Optimizer, cfg: Config, world: World, device: torch.device):
    """``deepspeed.initialize`` on an already joined process group; returns the DeepSpeed engine."""
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        config=deepspeed_config(cfg, world, device),
        dist_init_required=False,
    )
    if world.world_size == 1 and cfg.engine.zero_stage == 0:
        # DeepSpeed still flattens, "all-reduces" and copies back every gradient on one rank: 25% of a step
        # of the tiny model on CPU (bench/train_overhead.py), for an identity.
        engine.enable_backward_allreduce = False
    return engine


@contextlib.contextmanager
def autocast(engine_cfg: EngineConfig, device: torch.device) -> Iterator[None]:
    """bf16 autocast for forward and loss when ``engine.precision=bf16``; a no-op otherwise."""
    if engine_cfg.precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def save_engine_state(engine, local_dir: Path) -> None:
    """DeepSpeed's state of this rank (module, optimizer and momentum, counters) into ``local_dir/engine/``.

    A collective: every rank calls it. No ``latest`` file: our commit marker decides what exists.
    """
    engine.save_checkpoint(str(local_dir), tag=ENGINE_TAG, save_latest=False)


def load_engine_state(engine, local_dir: Path) -> None:
    """Restore what ``save_engine_state`` wrote (a collective)."""
    try:
        path, _ = engine.load_checkpoint(str(local_dir), tag=ENGINE_TAG)
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as e:
        raise UserError(f"DeepSpeed state in {local_dir / ENGINE_TAG} cannot be loaded: {e}".splitlines()[0]) from None
    if path is None:
        raise UserError(f"no DeepSpeed state in {local_dir / ENGINE_TAG}: the checkpoint is incomplete")


def consolidated_state_dict(engine, zero_stage: int) -> dict[str, torch.Tensor] | None:
    """The bare model's state dict in fp32 on CPU, on rank 0 (``None`` elsewhere).

    A collective under ZeRO-3 (parameters are gathered from their partitions); local otherwise.
    """
    if zero_stage == 3:
        state = engine._zero3_consolidated_16bit_state_dict()
        if not (dist.is_initialized() and dist.get_rank() != 0) and state is not None:
            return {k: _fp32_cpu(v) for k, v in state.items()}
        return None
    if dist.is_initialized() and dist.get_rank() != 0:
        return None
    return {k: _fp32_cpu(v) for k, v in engine.module.state_dict().items()}


def bare_module(engine) -> nn.Module:
    return engine.module


def _fp32_cpu(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().cpu()
    return t.float().clone() if t.is_floating_point() else t.clone()
