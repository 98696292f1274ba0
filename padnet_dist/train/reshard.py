"""DeepSpeed engine state of any world size, read back as one world-size-independent ``FullState``.

Why our own reader: DeepSpeed 0.19 refuses ZeRO-1/2 optimizer state saved by another data-parallel size ("Automatic
adjustment of ZeRO's optimizer state partitioning with a new world size is not currently supported"), and its
universal-checkpoint conversion (``ds_to_universal``) knows Adam's ``exp_avg``/``exp_avg_sq`` only, not SGD's
momentum, and needs state written at save time. The files themselves say everything needed:

- ``mp_rank_00_model_states.pt`` (every stage): ``module`` (the full state dict: weights and buffers),
  ``param_shapes`` (ZeRO: the trained parameters in flattening order), counters (``global_steps``, ...) and, without
  ZeRO, ``optimizer`` (torch SGD's state dict, parameters numbered in the optimizer's order).
- ``zero_pp_rank_{q}_mp_rank_00_optim_states.pt`` (ZeRO-1/2, one per saved rank ``q``): rank ``q``'s contiguous
  partition of the flattened fp32 master weights (``single_partition_of_fp32_groups``) and of SGD's momentum
  (``base_optimizer_state``), with ``param_slice_mappings`` naming which slice of it belongs to which parameter.

A rank reads only the files it needs: the module file, and of the ZeRO partitions only those that hold a slice of
the parameters it will own (``needed``): its own file when the world size is unchanged. Which saved partitions
those are follows from DeepSpeed's layout (parameters flattened in order, padded to a multiple of 2 x world size,
cut into equal partitions); the slices actually read are checked to cover every needed parameter, and the other
partitions are read when they do not. ZeRO-3 partitions parameters themselves and is not read here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import torch

from padnet_dist.errors import UserError

MODEL_FILE = "mp_rank_00_model_states.pt"
MOMENTUM = "momentum_buffer"
_ALIGNMENT_FACTOR = 2  # DeepSpeed's nccl_start_alignment_factor: a group is padded to 2 x world size elements


def zero_file(rank: int) -> str:
    return f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"


@dataclass
class FullState:
    """An engine's state independent of how many ranks saved it (tensors on CPU).

    ``module``: the model's state dict (weights as the module held them, buffers). ``master``: fp32 master weights
    of trained parameters by name (only those read). ``momentum``: SGD's momentum by parameter name (only those read;
    empty before the first step). ``counters``: DeepSpeed's ``global_steps``, ``global_samples``, ``skipped_steps``.
    """

    module: dict[str, torch.Tensor]
    master: dict[str, torch.Tensor] = field(default_factory=dict)
    momentum: dict[str, torch.Tensor] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    files_read: list[str] = field(default_factory=list)


def read_full_state(
    fetch: Callable[[str], Path],
    *,
    saved_world_size: int,
    saved_zero_stage: int,
    trained_names: list[str],
    needed: Collection[str] | None = None,
) -> FullState:
    """The state in a DeepSpeed checkpoint directory written by ``saved_world_size`` ranks at ZeRO stage 0-2.

    ``fetch(name)``: the local path of the engine file ``name`` (downloading it if need be). ``trained_names``: the
    optimizer's parameters in its order (the stage-0 file numbers them). ``needed``: the parameters whose master
    weights and momentum this rank must get; None = all of them.
    """
    if saved_zero_stage not in (0, 1, 2):
        raise ValueError(f"ZeRO stage {saved_zero_stage} state is not re-sharded here")
    files_read = [MODEL_FILE]
    model = _load(fetch(MODEL_FILE), MODEL_FILE)
    counters = {k: int(model.get(k) or 0) for k in ("global_steps", "global_samples", "skipped_steps")}
    state = FullState(module=dict(model["module"]), counters=counters, files_read=files_read)
    wanted = list(trained_names) if needed is None else [n for n in trained_names if n in set(needed)]
    if saved_zero_stage == 0:
        optimizer = model.get("optimizer") or {}
        saved = optimizer.get("state", {})
        order = [i for group in optimizer.get("param_groups", []) for i in group["params"]]
        if order and len(order) != len(trained_names):
            raise UserError(
                f"the checkpoint's optimizer has {len(order)} parameters, this model trains {len(trained_names)}: "
                "resume with the same model and phase"
            )
        for name, index in zip(trained_names, order):
            if name in wanted:
                state.master[name] = state.module[name].float()
                if MOMENTUM in saved.get(index, {}):
                    state.momentum[name] = saved[index][MOMENTUM]
        return state

    shapes = {n: torch.Size(s) for group in model["param_shapes"] for n, s in group.items()}
    guess = _partitions_holding(wanted, model["param_shapes"], saved_world_size)
    slices: dict[str, list[tuple[int, torch.Tensor, torch.Tensor | None]]] = {}
    read: set[int] = set()
    for ranks in (guess, range(saved_world_size)):  # the layout's guess first, then whatever it missed
        for q in ranks:
            if q not in read and not _covered(wanted, slices, shapes):
                _read_partition(fetch, q, slices)
                read.add(q)
                files_read.append(zero_file(q))
    if not _covered(wanted, slices, shapes):
        missing = [n for n in wanted if not _covered([n], slices, shapes)]
        raise UserError(f"the ZeRO partitions of this checkpoint lack parameters {missing[:3]}: it is incomplete")
    for name in wanted:
        parts = sorted(slices[name], key=lambda part: part[0])
        state.master[name] = torch.cat([fp32 for _, fp32, _ in parts]).view(shapes[name])
        if all(m is not None for _, _, m in parts):
            state.momentum[name] = torch.cat([m for _, _, m in parts]).view(shapes[name])
    return state


def _load(path: Path, name: str) -> dict:
    try:
        # DeepSpeed's own files: they hold its config and enum objects, so not weights_only
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"DeepSpeed state {name} cannot be read ({reason}): use another checkpoint") from None


def _read_partition(fetch: Callable[[str], Path], rank: int, slices: dict) -> None:
    """Add saved rank ``rank``'s slices of each parameter: ``(rank, fp32 slice, momentum slice or None)``."""
    sd = _load(fetch(zero_file(rank)), zero_file(rank))["optimizer_state_dict"]
    base = sd["base_optimizer_state"]
    for group, (fp32, mapping) in enumerate(zip(sd["single_partition_of_fp32_groups"], sd["param_slice_mappings"])):
        group_state = base.get("state", {}).get(group, {}) if isinstance(base, dict) else base[group]
        momentum = group_state.get(MOMENTUM)
        for name, address in mapping.items():
            fp32_slice = fp32.narrow(0, address.start, address.numel)
            m_slice = momentum.narrow(0, address.start, address.numel) if momentum is not None else None
            slices.setdefault(name, []).append((rank, fp32_slice, m_slice))


def _covered(names: list[str], slices: dict, shapes: dict) -> bool:
    return all(sum(p[1].numel() for p in slices.get(n, ())) == shapes[n].numel() for n in names)


def _partitions_holding(names: list[str], param_shapes: list[dict], world_size: int) -> list[int]:
    """The saved ranks whose partitions DeepSpeed's layout puts slices of ``names`` in (a guess, checked after)."""
    wanted, ranks = set(names), set()
    for group in param_shapes:
        total = sum(math.prod(s) for s in group.values())
        alignment = _ALIGNMENT_FACTOR * world_size
        partition = math.ceil(total / alignment) * alignment // world_size
        start = 0
        for name, shape in group.items():
            numel = math.prod(shape)
            if name in wanted and numel:
                ranks.update(range(start // partition, (start + numel - 1) // partition + 1))
            start += numel
    return sorted(r for r in ranks if r < world_size)
