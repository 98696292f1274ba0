"""The DeepSpeed seam: the only module that imports deepspeed.

Everything DeepSpeed needs is derived here from our config and the ``World``: device and backend,
the process group, the DeepSpeed config dict, the wrapped engine, mixed precision, and saving,
loading and consolidating engine state.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import deepspeed
import torch
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
from torch import nn

from padnet_dist.config import Config, EngineConfig
from padnet_dist.distributed import join_process_group
from padnet_dist.errors import UserError
from padnet_dist.train.reshard import MOMENTUM, FullState
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


def snapshot_engine_state(engine, local_dir: Path, reuse: list[tuple[Path, Any]] = ()) -> list[tuple[Path, Any]]:
    """A copy, in CPU memory, of what ``save_engine_state`` would write now: ``[(file path, state), ...]``.

    A collective: every rank calls it. The states own their tensors (copied at this call), so training may go on
    while another thread writes them with ``torch.save``; files DeepSpeed writes by itself (ZeRO's recovery
    script) land in ``local_dir`` at once. Costs one in-memory copy of this rank's module and optimizer.
    ``reuse``: an earlier snapshot nobody reads any more; its tensors are overwritten where shapes and dtypes
    match, which spares the allocation and first-touch page faults of a fresh copy (half the snapshot's time).
    """
    capture = _CapturingCheckpointEngine({os.path.normpath(path): state for path, state in reuse})
    real, engine.checkpoint_engine = engine.checkpoint_engine, capture
    try:
        engine.save_checkpoint(str(local_dir), tag=ENGINE_TAG, save_latest=False)
    finally:
        engine.checkpoint_engine = real
    return capture.captured


class _CapturingCheckpointEngine(TorchCheckpointEngine):
    """DeepSpeed's torch checkpoint engine, except that ``save`` keeps a private copy instead of writing."""

    def __init__(self, reuse: dict[str, Any]) -> None:
        super().__init__(None)
        self.reuse = reuse
        self.captured: list[tuple[Path, Any]] = []

    def save(self, state_dict, path: str) -> None:
        self.captured.append((Path(path), _owned_copy(state_dict, self.reuse.get(os.path.normpath(path)))))

    def preserves_storage_sharing(self) -> bool:
        return False  # _owned_copy already copies every tensor: no second clone by DeepSpeed


def _owned_copy(obj: Any, into: Any = None) -> Any:
    """``obj`` with every tensor copied to the CPU, detached (into the tensor at the same place of ``into`` when it
    fits): later in-place updates of the originals (the next optimiser steps) do not reach it."""
    if isinstance(obj, torch.Tensor):
        src = obj.detach()
        fits = (
            isinstance(into, torch.Tensor) and into.device.type == "cpu" and into.shape == src.shape
            and into.dtype == src.dtype and into.layout == src.layout == torch.strided
        )  # fmt: skip
        return into.copy_(src) if fits else src.to("cpu", copy=True)
    if type(obj) in (dict, OrderedDict):
        old = into if isinstance(into, dict) else {}
        return type(obj)((k, _owned_copy(v, old.get(k))) for k, v in obj.items())
    if type(obj) in (list, tuple):
        old = into if isinstance(into, list | tuple) and len(into) == len(obj) else [None] * len(obj)
        return type(obj)(_owned_copy(v, o) for v, o in zip(obj, old, strict=True))
    return copy.deepcopy(obj)


def load_engine_state(engine, local_dir: Path) -> None:
    """Restore what ``save_engine_state`` wrote (a collective)."""
    try:
        path, _ = engine.load_checkpoint(str(local_dir), tag=ENGINE_TAG)
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as e:
        raise UserError(f"DeepSpeed state in {local_dir / ENGINE_TAG} cannot be loaded: {e}".splitlines()[0]) from None
    if path is None:
        raise UserError(f"no DeepSpeed state in {local_dir / ENGINE_TAG}: the checkpoint is incomplete")


def zero_stage_of(engine) -> int:
    return int(engine.zero_optimization_stage())


def uses_fp16(engine) -> bool:
    return bool(engine.fp16_enabled())


def trained_parameter_names(engine) -> list[str]:
    """Names of the parameters the optimizer trains, in its order."""
    return [name for name, p in engine.module.named_parameters() if p.requires_grad]


def owned_parameter_names(engine, zero_stage: int) -> list[str]:
    """The trained parameters whose master weights and momentum this rank holds: a slice of each, under ZeRO-1/2
    (its partition); all of them without ZeRO."""
    if zero_stage == 0:
        return trained_parameter_names(engine)
    return [
        name
        for name, p in engine.module.named_parameters()
        if p.requires_grad and getattr(p, "_hp_mapping", None) is not None
    ]


def load_full_state(engine, state: FullState, zero_stage: int) -> None:
    """Put a world-size-independent ``state`` (``reshard.read_full_state``) into this rank's engine, ZeRO 0-2.

    The module gets every weight and buffer; the optimizer this rank's share of the fp32 master weights and
    momentum, through DeepSpeed's fragment API (``safe_set_full_fp32_param``/``safe_set_full_optimizer_state``).
    Local: no collective. Exact: the same values bit for bit as the saving ranks held.
    """
    engine.module.load_state_dict(state.module)
    named = dict(engine.module.named_parameters())
    if zero_stage == 0:
        optimizer = engine.optimizer
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise UserError(f"engine.zero_stage=0 with {type(optimizer).__name__}: resume with the saved world size")
        for name, value in state.momentum.items():
            optimizer.state[named[name]][MOMENTUM] = value.to(named[name].device, dtype=torch.float32).clone()
    else:
        from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state
        from deepspeed.utils.mixed_precision_linkage import lazy_init_hp_params_optimizer_state

        zero = engine.optimizer
        if state.momentum:
            # SGD creates its momentum at the first step; create it now so that the fragments have a home
            for group, flat in enumerate(zero.single_partition_of_fp32_groups):
                zero.optimizer.state[flat].setdefault(MOMENTUM, torch.zeros_like(flat))
                lazy_init_hp_params_optimizer_state(zero.bit16_groups[group], flat, zero.optimizer.state)
        for name in owned_parameter_names(engine, zero_stage):
            safe_set_full_fp32_param(named[name], state.master[name].to(named[name].device))
            if name in state.momentum:
                safe_set_full_optimizer_state(named[name], state.momentum[name].to(named[name].device), MOMENTUM)
    for key, value in state.counters.items():
        setattr(engine, key, value)


def full_optimizer_state(engine, zero_stage: int) -> dict[str, torch.Tensor]:
    """SGD's momentum of every trained parameter, whole, on CPU (a collective under ZeRO-1/2). For checks."""
    named = dict(engine.module.named_parameters())
    if zero_stage == 0:
        return {n: engine.optimizer.state[named[n]][MOMENTUM].detach().cpu().clone()
                for n in trained_parameter_names(engine) if MOMENTUM in engine.optimizer.state[named[n]]}  # fmt: skip
    from deepspeed.utils import safe_get_full_optimizer_state

    return {n: safe_get_full_optimizer_state(named[n], MOMENTUM).cpu() for n in trained_parameter_names(engine)}


def fp32_state_dict_from_zero_files(local_dir: Path) -> dict[str, torch.Tensor]:
    """The bare model's fp32 state dict consolidated by DeepSpeed's converter from every rank's ZeRO files below
    ``local_dir/engine/`` (for ZeRO-3, whose module states hold partitions, and fp16, whose fp32 masters live in
    the optimizer partitions)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = get_fp32_state_dict_from_zero_checkpoint(str(local_dir), tag=ENGINE_TAG)
    return {k: v.detach().float() if v.is_floating_point() else v for k, v in state.items()}


def bare_module(engine) -> nn.Module:
    return engine.module
