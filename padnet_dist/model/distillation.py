"""Deep multi-modal distillation (paper §3.4): modules A, B and C, chosen through ``DISTILLATIONS``.

Every module takes ``{task: F^t (B, D, h, w)}`` (the features made from the intermediate predictions by
``DistillationInputs``) and returns ``{final task k: F^{o,k}}``. All convolutions of the equations are 3x3,
without bias (the equations have none) and without normalisation after the sum.
"""

from __future__ import annotations

import torch
from torch import nn

from padnet_dist.model.frontend import conv_bn_relu


def _conv(channels: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, padding=1, bias=False)


class DistillationInputs(nn.Module):
    """``Y^t -> F^t``: one conv(3x3)+BN+ReLU per input, from its channel count to ``channels`` (D)."""

    def __init__(self, in_channels: dict[str, int], channels: int) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict({task: conv_bn_relu(c, channels) for task, c in in_channels.items()})

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {task: encoder(inputs[task]) for task, encoder in self.encoders.items()}


class ConcatDistillation(nn.Module):
    """Module A: ``F^o = CONCAT(F^1, ..., F^T)`` (channel order = ``input_tasks``), one set shared by every decoder."""

    def __init__(self, input_tasks: list[str], final_tasks: list[str], channels: int) -> None:
        super().__init__()
        if not input_tasks:
            raise ValueError("distillation A needs at least one input task")
        self.input_tasks, self.final_tasks = list(input_tasks), list(final_tasks)
        self.out_channels = len(input_tasks) * channels

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        fused = torch.cat([features[t] for t in self.input_tasks], dim=1)
        return {k: fused for k in self.final_tasks}


class MessagePassingDistillation(nn.Module):
    """Module B, eq. (1): ``F^{o,k} = F^k + sum_{t != k} W_{t,k} (x) F^t``, a separate conv per (t, k) pair.

    ``messages[f"{t}_to_{k}"]`` holds ``W_{t,k}``. Every final task must be among the input tasks.
    """

    def __init__(self, input_tasks: list[str], final_tasks: list[str], channels: int) -> None:
        super().__init__()
        _require_final_in_inputs("B", input_tasks, final_tasks)
        self.input_tasks, self.final_tasks = list(input_tasks), list(final_tasks)
        self.messages = nn.ModuleDict(
            {f"{t}_to_{k}": _conv(channels) for k in final_tasks for t in input_tasks if t != k}
        )
        self.out_channels = channels

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for k in self.final_tasks:
            refined = features[k]
            for t in self.input_tasks:
                if t != k:
                    refined = refined + self.messages[f"{t}_to_{k}"](features[t])
            out[k] = refined
        return out


class AttentionDistillation(nn.Module):
    """Module C, eqs. (2)-(3): ``G^k = sigmoid(W_g^k (x) F^k)``; ``F^{o,k} = F^k + sum_{t != k} G^k * (W_t (x) F^t)``.

    Follows eq. (3) literally: the message convolution ``W_t`` is indexed by the source task only, so one
    ``messages[t]`` is shared by every receiving task k; the gate ``gates[k]`` (``W_g^k``) is computed from the
    receiving task's own features and has D channels, multiplied element-wise with each message.
    Every final task must be among the input tasks.
    """

    def __init__(self, input_tasks: list[str], final_tasks: list[str], channels: int) -> None:
        super().__init__()
        _require_final_in_inputs("C", input_tasks, final_tasks)
        self.input_tasks, self.final_tasks = list(input_tasks), list(final_tasks)
        self.gates = nn.ModuleDict({k: _conv(channels) for k in final_tasks})
        sources = [t for t in input_tasks if any(t != k for k in final_tasks)]
        self.messages = nn.ModuleDict({t: _conv(channels) for t in sources})
        self.out_channels = channels

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        messages = {t: conv(features[t]) for t, conv in self.messages.items()}
        out = {}
        for k in self.final_tasks:
            gate = torch.sigmoid(self.gates[k](features[k]))
            refined = features[k]
            for t in self.input_tasks:
                if t != k:
                    refined = refined + gate * messages[t]
            out[k] = refined
        return out


def _require_final_in_inputs(name: str, input_tasks: list[str], final_tasks: list[str]) -> None:
    missing = [k for k in final_tasks if k not in input_tasks]
    if missing:
        raise ValueError(
            f"distillation {name} refines each final task from its own intermediate features, "
            f"but the distillation inputs lack {missing}: add them to the inputs"
        )


# The one real choice of the model: which distillation module (paper Figure 3). Its keys are
# ``padnet_dist.vocabulary.DISTILLATIONS``, the names the config accepts.
DISTILLATIONS: dict[str, type[nn.Module]] = {
    "A": ConcatDistillation,
    "B": MessagePassingDistillation,
    "C": AttentionDistillation,
}
