"""Device, backend and process group from the config and the ``World`` (torch only; no DeepSpeed).

Shared by training (``train/engine.py`` adds DeepSpeed on top) and evaluation.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from padnet_dist.config import EngineConfig
from padnet_dist.errors import UserError
from padnet_dist.world import World


def choose_device(engine_cfg: EngineConfig, world: World) -> torch.device:
    """A GPU of this rank (``cuda_device_index``) or ``cpu``; ``auto`` picks cuda when it is available."""
    want_cuda = engine_cfg.device == "cuda" or (engine_cfg.device == "auto" and torch.cuda.is_available())
    if not want_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("engine.device=cuda but no GPU is visible: use engine.device=cpu (or auto)")
    index = cuda_device_index(world.local_rank, world.world_size // world.num_nodes, torch.cuda.device_count())
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def cuda_device_index(local_rank: int, num_local_ranks: int, num_visible: int) -> int:
    """Which of the ``num_visible`` GPUs this process sees (CUDA_VISIBLE_DEVICES) rank ``local_rank`` uses.

    When a process sees at least one GPU per rank of its node (torchrun, ``--nproc``, srun without GPU
    binding), the GPUs are shared by index: ``local_rank``. When it sees fewer (``srun --gpus-per-task``,
    ``--gpu-bind``, Ray: the launcher gave each task its own devices), they are its own: device 0.
    """
    if num_visible < 1:
        raise UserError("no GPU is visible to this rank (CUDA_VISIBLE_DEVICES is empty): use engine.device=cpu")
    if num_visible >= num_local_ranks:
        if local_rank >= num_visible:
            raise UserError(f"local rank {local_rank} has no GPU: this node shows {num_visible}; start fewer ranks")
        return local_rank
    return 0


def choose_backend(engine_cfg: EngineConfig, device: torch.device) -> str:
    """``nccl`` on GPUs, ``gloo`` on CPU; an explicit nccl on CPU is refused."""
    if engine_cfg.backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if engine_cfg.backend == "nccl" and device.type != "cuda":
        raise UserError("engine.backend=nccl needs GPUs: use engine.backend=gloo (or auto) on CPU")
    return engine_cfg.backend


def join_process_group(world: World, backend: str, timeout_s: float = 1800.0) -> bool:
    """Join the job's process group unless one exists (e.g. Ray Train made it); True when this call created it.

    Libraries that read LOCAL_RANK and friends from the environment (DeepSpeed) get them exported from ``world``.
    A single-process world creates no group.
    """
    os.environ.update(
        RANK=str(world.rank),
        LOCAL_RANK=str(world.local_rank),
        WORLD_SIZE=str(world.world_size),
        MASTER_ADDR=world.master_addr,
        MASTER_PORT=str(world.master_port),
    )
    if dist.is_initialized():
        if dist.get_world_size() != world.world_size or dist.get_rank() != world.rank:
            raise UserError(
                f"an existing process group (rank {dist.get_rank()} of {dist.get_world_size()}) disagrees with "
                f"the World (rank {world.rank} of {world.world_size}): build the World from the same launcher"
            )
        return False
    dist.init_process_group(
        backend,
        init_method=f"tcp://{world.master_addr}:{world.master_port}",
        rank=world.rank,
        world_size=world.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return True
