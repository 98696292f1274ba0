"""Phase 2 from the phase 1 of another model config (a sweep's shared phase 1): what it takes from the checkpoint,
what it refuses, and that the result is bitwise what the row's own phase 1 would have given (CPU, one rank)."""

from __future__ import annotations

import io
import json

import pytest
import torch

from padnet_dist.config import load_config, to_yaml
from padnet_dist.errors import UserError
from padnet_dist.launch.env import free_port
from padnet_dist.model import build_model
from padnet_dist.storage import join_url, storage_for
from padnet_dist.train import checkpoint as ckpt
from padnet_dist.train import read_inference_checkpoint, train
from padnet_dist.train.phase_init import check_phase1_init, load_phase1_state
from padnet_dist.world import World
from tests.helpers import REPO_ROOT

# t2_a_sp and t2_c_sp over the tiny preset: distillation A or C, final scene parsing only
ROW_A = ("model.distillation=A", "model.final_tasks=[semantic]")
ROW_C = ("model.distillation=C", "model.final_tasks=[semantic]")


def _model_cfg(*overrides: str):
    return load_config(REPO_ROOT / "configs/tiny.yaml", overrides).model


def _checkpoint_with_config(tmp_path, cfg_overrides: tuple[str, ...]) -> str:
    """A committed phase-1 checkpoint as far as its config goes (config.yaml, a model.pt, the marker)."""
    cfg = load_config(REPO_ROOT / "configs/tiny.yaml", cfg_overrides)
    st = storage_for(str(tmp_path))
    url = ckpt.checkpoint_url(ckpt.phase_dir(str(tmp_path / "owner"), 1), 4)
    buf = io.BytesIO()
    torch.save({}, buf)
    files = {"config.yaml": to_yaml(cfg).encode(), "model.pt": buf.getvalue()}
    for name, data in files.items():
        st.write_bytes(join_url(url, name), data)
    st.write_bytes(join_url(url, ckpt.COMMIT_MARKER), json.dumps({"step": 4, "files": {}}).encode())
    return url


def test_phase2_accepts_a_phase1_checkpoint_of_another_distillation_and_refuses_another_phase1(tmp_path) -> None:
    url = _checkpoint_with_config(tmp_path, ROW_A)
    st = storage_for(str(tmp_path))
    check_phase1_init(url, _model_cfg(*ROW_C), st)  # distillation and final tasks: not phase 1's business
    check_phase1_init(url, _model_cfg("model.distillation=B"), st)  # final DE+SP: same phase 1 too
    for other, named in (
        (("model.width=64",), "model.width"),
        (("model.variant=frontend", "model.intermediate_tasks=[]", "model.distill_inputs=[]"), "trains inter_semantic"),
    ):
        with pytest.raises(UserError) as info:
            check_phase1_init(url, _model_cfg(*other), st)
        message = str(info.value)
        assert named in message and "phase 2 cannot start from" in message and "\n" not in message


def test_load_phase1_state_takes_exactly_the_phase1_entries_and_keeps_the_rest_of_this_runs_init() -> None:
    torch.manual_seed(0)
    owner = build_model(_model_cfg(*ROW_A))
    with torch.no_grad():  # as if phase 1 had trained: every entry moved, BatchNorm statistics included
        for value in owner.state_dict().values():
            value.add_(1) if value.is_floating_point() else value.fill_(7)
    torch.manual_seed(1)
    model = build_model(_model_cfg(*ROW_C))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = load_phase1_state(model, owner.state_dict(), "owner-ckpt")
    assert set(names) == set(model.phase_state_names(1))
    assert "intermediate.heads.semantic.features.1.running_var" in names
    after, given = model.state_dict(), owner.state_dict()
    for name, value in after.items():
        expected = given[name] if name in names else before[name]
        assert torch.equal(value, expected), name
    assert any(n.startswith("distillation.") for n in after)  # C's own modules kept their init
    broken = {k: v for k, v in given.items() if k != "intermediate.heads.semantic.score.weight"}
    with pytest.raises(UserError, match=r"lacks or mis-shapes 1 of the \d+ entries .*score\.weight"):
        load_phase1_state(model, broken, "owner-ckpt")


def test_a_shared_phase1_is_bitwise_the_phase1_each_row_would_train_and_gives_the_same_phase2(tiny_cfg, tmp_path):
    """Phase 1 of distillation A and of C trained separately end bitwise equal; C's phase 2 from A's phase 1 ends
    bitwise where C's phase 2 from its own phase 1 ends."""
    common = ("run.max_steps=3", "run.checkpoint_every_steps=0", "data.seed=5")
    ends = {}
    for row, overrides in (("a", ROW_A), ("c", ROW_C)):
        summary = train(tiny_cfg(*common, *overrides, run_dir=str(tmp_path / row)), World(master_port=free_port()))
        assert summary["step"] == 3
        ends[row] = summary["checkpoint"]
    _, phase1_a = read_inference_checkpoint(ends["a"])
    _, phase1_c = read_inference_checkpoint(ends["c"])
    names = build_model(_model_cfg(*ROW_C)).phase_state_names(1)
    for name in names:
        assert torch.equal(phase1_a[name], phase1_c[name]), name

    finals = {}
    for source in ("a", "c"):
        cfg = tiny_cfg(*common, *ROW_C, "phase=2", f"phases.phase2.init_from={ends[source]}",
                       run_dir=str(tmp_path / f"c-from-{source}"))  # fmt: skip
        summary = train(cfg, World(master_port=free_port()))
        finals[source] = read_inference_checkpoint(summary["checkpoint"])[1]
    assert finals["a"].keys() == finals["c"].keys()
    for name in finals["a"]:
        assert torch.equal(finals["a"][name], finals["c"][name]), name
