"""The collectives training, evaluation and the Ray launcher use, over the default process group (torch only).

Every function is a collective when a process group of more than one rank exists: every rank calls it, in the
same order. Without one (a single process, or a group of one) each returns its own input, so callers need no
"am I distributed" branch. NCCL reduces GPU tensors only, so under nccl tensors travel through this rank's
current CUDA device (``torch.cuda.set_device``, done by ``distributed.choose_device``) and come back on the CPU.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def _group_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _reduce(tensor: torch.Tensor, op: dist.ReduceOp) -> torch.Tensor:
    if dist.get_backend() == "nccl":
        reduced = tensor.detach().to(torch.device("cuda", torch.cuda.current_device())).clone()
        dist.all_reduce(reduced, op=op)
        return reduced.cpu()
    reduced = tensor.detach().cpu().clone()
    dist.all_reduce(reduced, op=op)
    return reduced


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over all ranks, on the CPU, same dtype (int64 and float64 included).

    Integers add exactly; floats in an order the backend chooses, so float sums agree to rounding only.
    """
    if _group_size() == 1:
        return tensor
    return _reduce(tensor, dist.ReduceOp.SUM)


def max_over_ranks(value: int) -> int:
    """The largest ``value`` any rank passed."""
    if _group_size() == 1:
        return value
    return int(_reduce(torch.tensor([value], dtype=torch.int64), dist.ReduceOp.MAX).item())


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on at least one rank."""
    return max_over_ranks(1 if flag else 0) > 0


def gather_objects(obj: Any, group: Any = None) -> list[Any]:
    """Every rank's picklable ``obj``, indexed by rank, on every rank (of ``group``, default: all ranks)."""
    size = _group_size() if group is None else dist.get_world_size(group)
    if size == 1:
        return [obj]
    out: list[Any] = [None] * size
    dist.all_gather_object(out, obj, group=group)
    return out


def side_group(timeout_s: float = 7200.0) -> Any:
    """A second group of all ranks over gloo, for the collectives of one background thread (collectives of two
    threads on one group would interleave); None without a group of more than one rank. A collective."""
    if _group_size() == 1:
        return None
    import datetime

    return dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s))


def barrier() -> None:
    """Wait until every rank arrives here."""
    if _group_size() > 1:
        dist.barrier()
