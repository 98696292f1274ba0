"""Phase 1 of one model is phase 1 of another: same signature, and bitwise the same initial weights under a seed."""

from __future__ import annotations

import pytest
import torch

from padnet_dist.config import load_config
from padnet_dist.model import build_model
from padnet_dist.model.phase1 import phase1_differences, phase1_signature
from tests.helpers import REPO_ROOT

PADNET_ROWS = ("t1_a_de", "t1_b_de", "t1_c_de", "t1t2_c_de_sp", "t2_a_sp", "t2_b_sp", "t2_c_sp")


def _cfg(stem: str, *overrides: str):
    return load_config([REPO_ROOT / "configs/tiny.yaml", REPO_ROOT / f"configs/ablations/{stem}.yaml"], overrides)


def _phase1_state(stem: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_model(_cfg(stem).model)
    state = model.state_dict()
    return {n: state[n] for n in model.phase_state_names(1)}


def _assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"


@pytest.mark.parametrize("group", [PADNET_ROWS, ("t2_frontend_sp", "t1t2_frontend_de_sp")])
def test_rows_with_the_same_phase1_start_it_from_bitwise_the_same_weights(group: tuple[str, ...]) -> None:
    """Each module is initialised from the seed and its own name: the distillation, decoders and other heads a row
    has (and the random numbers they draw) do not move the front end's or the phase-1 head's initial weights."""
    first = _phase1_state(group[0], seed=3)
    assert any(n.startswith("frontend.reducers") for n in first) and len(first) > 20
    for stem in group[1:]:
        _assert_bitwise_equal(first, _phase1_state(stem, seed=3))
    other_seed = _phase1_state(group[0], seed=4)
    assert not torch.equal(first["frontend.reducers.conv1.0.weight"], other_seed["frontend.reducers.conv1.0.weight"])


def test_phase1_state_names_are_the_front_end_and_the_phase1_head_with_their_batchnorm_statistics() -> None:
    model = build_model(_cfg("t2_c_sp").model)
    names = model.phase_state_names(1)
    assert model.phase_outputs(1) == ("inter_semantic",)
    assert {n.split(".")[0] for n in names} == {"frontend", "intermediate"}
    assert {n.split(".")[2] for n in names if n.startswith("intermediate.")} == {"semantic"}
    assert "intermediate.heads.semantic.features.1.running_mean" in names
    trained = {id(p) for p in model.phase_parameters(1)}
    params = {n for n, p in model.named_parameters() if id(p) in trained}
    assert params <= set(names) and len(params) == len(trained)
    assert model.phase_state_names(2) == tuple(model.state_dict())


def test_phase1_differences_allow_what_phase1_does_not_train_and_name_the_rest() -> None:
    assert phase1_differences(_cfg("t2_a_sp").model, _cfg("t1t2_c_de_sp").model) == []
    assert phase1_differences(_cfg("t2_frontend_sp").model, _cfg("t1t2_frontend_de_sp").model) == []
    assert phase1_differences(_cfg("t2_c_sp").model, _cfg("t2_c_sp", "model.width=64").model) == ["model.width"]
    (why,) = phase1_differences(_cfg("t2_frontend_sp").model, _cfg("t2_c_sp").model)
    assert why == "phase 1 trains final_semantic there but inter_semantic here"
    (why,) = phase1_differences(_cfg("t1_frontend_de").model, _cfg("t2_frontend_sp").model)
    assert why == "phase 1 trains final_depth there but final_semantic here"
    # the baseline's phase-1 bridge is distill_channels wide: a free key, caught by the shapes
    (why,) = phase1_differences(_cfg("t2_frontend_sp").model, _cfg("t2_frontend_sp", "model.distill_channels=4").model)
    assert why.startswith("phase-1 state bridges.semantic.reduce.0.weight is (16,") and "(4," in why


def test_phase1_signature_is_built_without_memory_on_the_meta_device() -> None:
    signature = phase1_signature(load_config(REPO_ROOT / "configs/nyud.yaml").model)  # ResNet-50, width 512
    assert signature.outputs == ("inter_semantic",)
    assert dict(signature.state)["intermediate.heads.semantic.score.weight"] == (40, 512, 3, 3)
