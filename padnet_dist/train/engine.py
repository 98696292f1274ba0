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
from padnet_dist.train.reshard import MOMENTUM, FullState
from padnet_dist.world import World

ENGINE_TAG = "engine"  # the sub-directory of a checkpoint holding DeepSpeed's files


def init_distributed(world: World, backend: str, timeout_s: float = 1800.0) -> None:
    """Join (or adopt) the job's process group, then let DeepSpeed use it."""
    join_process_group(world, backend, timeout_s)
    deepspeed.init_distributed(dist_backend=backend, dist_init_required=False)


def set_determinism(deterministic: bool, device: torch.device) -> None:
    """Bitwise-reproducible kernels when asked (slower), else the fastest ones."""
    if deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = device.type == "cuda"


def check_precision(engine_cfg: EngineConfig, device: torch.device) -> None:
    """Refuse a precision the device cannot run: fp16 on CPU, bf16 on GPUs older than Ampere."""
    if engine_cfg.precision == "fp16" and device.type != "cuda":
        raise UserError("engine.precision=fp16 is not supported on CPU: use fp32 (or bf16, slow on CPUs without AMX)")
    if engine_cfg.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("engine.precision=bf16 is not supported by this GPU: use fp16 or fp32")


def deepspeed_config(cfg: Config, world: World, device: torch.device) -> dict[str, Any]:
    """The DeepSpeed config dict for ``cfg`` (batch sizes per rank, accumulation, clipping, ZeRO, fp16).

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
        "zero_optimization": {"stage": zero},
        "zero_allow_untested_optimizer": zero > 0,
        "fp16": {"enabled": cfg.engine.precision == "fp16" and device.type == "cuda"},
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def prepare_model(model: nn.Module, engine_cfg: EngineConfig, device: torch.device) -> nn.Module:
    """Move to ``device``; SyncBatchNorm across ranks on GPUs only (it raises on CPU tensors)."""
    if engine_cfg.sync_batchnorm and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif engine_cfg.sync_batchnorm:
        warnings.warn("engine.sync_batchnorm is ignored on CPU: plain BatchNorm is used", stacklevel=2)
    return model.to(device)


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
