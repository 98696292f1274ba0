"""Whether two model configs train the same phase 1, so that one phase-1 checkpoint can start both phase 2s.

Phase 1 trains the front end and the modules producing ``PADNet.phase_outputs(1)`` (``phase_modules(1)``); the
rest of the network is built but neither run nor changed. Two configs train the same phase 1 when

- every model key but ``PHASE1_FREE_KEYS`` is equal (backbone, widths, classes, output stride, depth init, ImageNet
  weights: what shapes or initialises the front end and the phase-1 head), and
- the built models have the same ``phase_outputs(1)`` and the same ``phase_state_names(1)`` with the same shapes
  (built on the meta device: no memory, no time).

The free keys only decide which other modules exist and what phase 2 does with them; the structural check catches
the cases where one does reach phase 1: ``variant`` frontend trains ``final_*`` rather than ``inter_*``,
``intermediate_tasks`` without ``semantic`` moves phase 1 to depth, ``distill_channels`` is the width of the
baseline's phase-1 bridge. Since a module's initialisation depends only on the seed and its own name
(``padnet_dist.model.padnet``), equal signatures under the same seed start from bitwise the same weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from padnet_dist.config.model import ModelConfig
from padnet_dist.model.build import build_model

# Model keys phase 1 does not read beyond what phase1_signature compares (see the module docstring).
PHASE1_FREE_KEYS = frozenset(
    {"variant", "distillation", "final_tasks", "intermediate_tasks", "distill_inputs", "distill_channels",
     "supervise_intermediate"}
)  # fmt: skip


@dataclass(frozen=True)
class Phase1Signature:
    """What phase 1 of a model trains: its outputs and the ``(state_dict key, shape)`` of every parameter and buffer
    of its modules, in ``state_dict`` order."""

    outputs: tuple[str, ...]
    state: tuple[tuple[str, tuple[int, ...]], ...]


def phase1_signature(model_cfg: ModelConfig) -> Phase1Signature:
    with torch.device("meta"):
        model = build_model(model_cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return Phase1Signature(model.phase_outputs(1), tuple((k, shapes[k]) for k in model.phase_state_names(1)))


def phase1_model_keys(model_cfg: ModelConfig) -> dict[str, Any]:
    """The model keys phase 1 depends on (all but ``PHASE1_FREE_KEYS``), by name."""
    return {k: v for k, v in dataclasses.asdict(model_cfg).items() if k not in PHASE1_FREE_KEYS}


def phase1_differences(trained: ModelConfig, current: ModelConfig) -> list[str]:
    """Why a phase 1 trained with ``trained`` is not the phase 1 of ``current`` (empty: it is): the differing
    ``model.*`` keys, else the first difference of their phase-1 signatures."""
    a, b = phase1_model_keys(trained), phase1_model_keys(current)
    keys = [f"model.{k}" for k in sorted(a) if a[k] != b[k]]
    if keys:
        return keys
    sa, sb = phase1_signature(trained), phase1_signature(current)
    if sa.outputs != sb.outputs:
        return [f"phase 1 trains {', '.join(sa.outputs)} there but {', '.join(sb.outputs)} here"]
    if sa.state != sb.state:
        there, here = dict(sa.state), dict(sb.state)
        for name in sorted(there.keys() | here.keys()):
            if there.get(name) != here.get(name):
                return [
                    f"phase-1 state {name} is {there.get(name) or 'absent'} there, {here.get(name) or 'absent'} here"
                ]
    return []
