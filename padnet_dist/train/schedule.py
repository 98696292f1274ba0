"""Learning-rate schedules as pure functions of the optimiser step (resume needs nothing but the step)."""

from __future__ import annotations

import math


def lr_at(
    step: int,
    *,
    base_lr: float,
    total_steps: int,
    schedule: str = "constant",
    warmup_steps: int = 0,
    poly_power: float = 0.9,
) -> float:
    """The learning rate of optimiser step ``step`` (0-based) of ``total_steps``.

    ``constant`` is the paper's choice (§4.1); ``poly`` is ``base * (1 - t)^power`` and ``cosine`` decays
    to 0, with ``t`` the fraction of the post-warmup steps done. Warmup ramps linearly from
    ``base/warmup_steps`` to ``base`` over the first ``warmup_steps`` steps.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    decay_steps = max(1, total_steps - warmup_steps)
    t = min(1.0, max(0.0, (step - warmup_steps) / decay_steps))
    if schedule == "poly":
        return base_lr * (1.0 - t) ** poly_power
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"optim.schedule='{schedule}' is not one of constant, poly, cosine")
