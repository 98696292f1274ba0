"""Phase 2's start from a phase-1 checkpoint, which may come from another model config (a sweep's shared phase 1).

Phase 1 changes only the front end and the phase-1 head (``PADNet.phase_state_names(1)``), so phase 2 takes exactly
those parameters and buffers (BatchNorm statistics) from the checkpoint; every other module keeps this run's own
initialisation (seeded by ``data.seed``). For a run's own phase 1 that is bitwise the full state dict it saved: the
untrained modules of the checkpoint are the same seeded initialisation. A checkpoint whose phase 1 trained
something else (``padnet_dist.model.phase1.phase1_differences``) is refused in one line.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from padnet_dist.config import ModelConfig
from padnet_dist.errors import UserError
from padnet_dist.train.checkpoint import read_config


def check_phase1_init(ckpt_url: str, current: ModelConfig, storage) -> None:
    """Refuse a phase-1 checkpoint whose phase 1 is not this model's (naming what differs)."""
    from padnet_dist.model.phase1 import phase1_differences

    differ = phase1_differences(read_config(ckpt_url, storage).model, current)
    if differ:
        raise UserError(
            f"phase 2 cannot start from {ckpt_url}: its phase 1 trained another network ({'; '.join(differ)}); "
            "point phases.phase2.init_from (or pipeline.phase1_from) at a phase 1 of the same front end and head"
        )


def load_phase1_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], ckpt_url: str) -> list[str]:
    """Copy the phase-1-trained entries of ``state`` (a phase-1 checkpoint's model state) into ``model``; return
    their names. Nothing else of ``model`` changes."""
    names = model.phase_state_names(1)
    own = model.state_dict()
    missing = [n for n in names if n not in state]
    wrong = [n for n in names if n in state and tuple(state[n].shape) != tuple(own[n].shape)]
    if missing or wrong:
        first = missing[0] if missing else f"{wrong[0]} {tuple(state[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)}"
        raise UserError(
            f"phase-1 checkpoint {ckpt_url} lacks or mis-shapes {len(missing) + len(wrong)} of the {len(names)} "
            f"entries phase 1 trains (first: {first}): use a checkpoint of this model's phase 1"
        )
    result = model.load_state_dict({n: state[n] for n in names}, strict=False)
    assert not result.unexpected_keys  # the names are this model's own
    return list(names)
