"""Each distillation module computes its equation of paper §3.4 with its own convolution weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from padnet_dist.model.distillation import (
    DISTILLATIONS,
    AttentionDistillation,
    ConcatDistillation,
    MessagePassingDistillation,
)

TASKS = ["depth", "normals", "semantic", "contour"]
D = 6


def _features(tasks: list[str]) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {t: torch.randn(2, D, 5, 7) for t in tasks}


def _conv(module: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """W (x) F computed directly from the weights (3x3, padding 1, no bias)."""
    assert module.bias is None
    return F.conv2d(x, module.weight, padding=1)


def test_registry_names_the_three_modules() -> None:
    assert DISTILLATIONS == {"A": ConcatDistillation, "B": MessagePassingDistillation, "C": AttentionDistillation}


def test_a_concatenates_one_shared_set_for_every_decoder() -> None:
    feats = _features(TASKS)
    module = ConcatDistillation(TASKS, ["depth", "semantic"], D)
    out = module(feats)
    expected = torch.cat([feats[t] for t in TASKS], dim=1)
    assert module.out_channels == 4 * D
    assert torch.equal(out["depth"], expected) and torch.equal(out["semantic"], expected)


@pytest.mark.parametrize("final_tasks", [["depth", "semantic"], ["depth"], ["semantic"]])
def test_b_is_equation_1(final_tasks: list[str]) -> None:
    feats = _features(TASKS)
    module = MessagePassingDistillation(TASKS, final_tasks, D)
    out = module(feats)
    assert set(out) == set(final_tasks)
    assert len(module.messages) == 3 * len(final_tasks)  # one W_{t,k} per (t != k, k) pair
    for k in final_tasks:
        expected = feats[k] + sum(_conv(module.messages[f"{t}_to_{k}"], feats[t]) for t in TASKS if t != k)
        torch.testing.assert_close(out[k], expected)


@pytest.mark.parametrize("final_tasks", [["depth", "semantic"], ["depth"]])
def test_c_is_equations_2_and_3(final_tasks: list[str]) -> None:
    feats = _features(TASKS)
    module = AttentionDistillation(TASKS, final_tasks, D)
    out = module(feats)
    for k in final_tasks:
        gate = torch.sigmoid(_conv(module.gates[k], feats[k]))  # eq. 2: from the receiving task's own features
        expected = feats[k] + sum(gate * _conv(module.messages[t], feats[t]) for t in TASKS if t != k)  # eq. 3
        torch.testing.assert_close(out[k], expected)
    # W_t is indexed by the source only: created just for tasks that send to some other final task
    assert sorted(module.messages) == sorted(t for t in TASKS if any(t != k for k in final_tasks))


def test_c_gate_actually_gates() -> None:
    """With the gate driven to zero the module returns F^k unchanged (the message is fully blocked)."""
    feats = _features(["depth", "semantic"])
    module = AttentionDistillation(["depth", "semantic"], ["depth"], D)
    with torch.no_grad():
        module.gates["depth"].weight.zero_()
        assert not torch.allclose(module(feats)["depth"], feats["depth"])  # sigmoid(0) = 0.5 passes half
        feats["depth"] = feats["depth"].abs()
        module.gates["depth"].weight.fill_(-100.0)
        torch.testing.assert_close(module(feats)["depth"], feats["depth"])


@pytest.mark.parametrize("cls", [MessagePassingDistillation, AttentionDistillation])
def test_b_and_c_need_each_final_task_among_inputs(cls: type) -> None:
    with pytest.raises(ValueError, match="lack"):
        cls(["normals", "contour"], ["depth"], D)
