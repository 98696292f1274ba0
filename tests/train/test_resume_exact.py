"""Exact resume: an interrupted and resumed run ends with bitwise the weights of an uninterrupted one (CPU).

Runs ``train(cfg, world)`` in this process on one rank (the two-rank path is in test_torchrun.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from padnet_dist.errors import UserError
from padnet_dist.launch.env import free_port
from padnet_dist.model import build_model
from padnet_dist.train import read_inference_checkpoint, train
from padnet_dist.train.rng import seed_everything
from padnet_dist.world import World


def _run(cfg) -> dict:
    return train(cfg, World(master_port=free_port()))


def _assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"tensor {k} differs"


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_interrupted_run_resumes_to_the_same_weights(tiny_cfg, tmp_path, zero_stage):
    # 16 samples, batch 2: 8 steps per epoch; 2 epochs with accumulation of 2 micro-batches -> 8 steps.
    # ZeRO-2: the re-sharding reader (train/reshard.py) restores the partitions, bit for bit
    common = (
        f"engine.zero_stage={zero_stage}",
        "phases.phase1.epochs=2",
        "optim.grad_accum_steps=2",
        "optim.schedule=poly",
        "optim.warmup_steps=2",
        "run.checkpoint_every_steps=3",
    )
    straight = _run(tiny_cfg(*common, run_dir=str(tmp_path / "straight")))
    assert straight["finished"] and straight["step"] == 8

    interrupted_dir = str(tmp_path / "interrupted")
    stopped = _run(tiny_cfg(*common, "run.max_steps=3", run_dir=interrupted_dir))
    assert stopped["step"] == 3 and not stopped["finished"]
    resumed = _run(tiny_cfg(*common, run_dir=interrupted_dir))  # run.resume=auto
    assert resumed["resumed_from"].endswith("step-000000003") and resumed["step"] == 8

    _, want = read_inference_checkpoint(straight["checkpoint"])
    _, got = read_inference_checkpoint(resumed["checkpoint"])
    _assert_bitwise_equal(want, got)

    # the log of the resumed run continues the first part's
    records = [json.loads(line) for line in Path(interrupted_dir, "phase1/logs/rank0.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9))
    for key in ("inter_semantic", "total", "lr", "samples_per_s", "data_wait_s", "compute_s", "epoch"):
        assert key in records[-1]


def test_phase2_starts_from_phase1_and_trains_all_six_losses(tiny_cfg, tmp_path):
    run_dir = str(tmp_path / "run")
    phase1 = _run(tiny_cfg("run.max_steps=2", run_dir=run_dir))
    phase2 = _run(tiny_cfg("phase=2", "run.max_steps=2", run_dir=run_dir))
    assert phase2["initialised_from"] == phase1["checkpoint"]
    assert set(phase2["losses"]) == {
        "inter_depth", "inter_normals", "inter_semantic", "inter_contour", "final_depth", "final_semantic", "total",
    }  # fmt: skip
    assert set(phase1["losses"]) == {"inter_semantic", "total"}
    # phase 1 trains only the front end and the semantic head: the decoders keep their initial values,
    # which phase 2 then trains
    seed_everything(0)  # data.seed: the trainer seeds this way before building the model
    initial = build_model(tiny_cfg().model).state_dict()
    _, p1 = read_inference_checkpoint(phase1["checkpoint"])
    _, p2 = read_inference_checkpoint(phase2["checkpoint"])
    decoder_keys = [k for k in p1 if k.startswith("decoders.") and p1[k].is_floating_point()]
    assert decoder_keys and all(torch.equal(p1[k], initial[k]) for k in decoder_keys)
    assert any(not torch.equal(p1[k], p2[k]) for k in decoder_keys)
    frontend_keys = [k for k in p1 if k.startswith("frontend.") and k.endswith("weight")]
    assert any(not torch.equal(p1[k], initial[k]) for k in frontend_keys)


def test_truncated_engine_file_is_named_on_resume(tiny_cfg, tmp_path):
    run_dir = str(tmp_path / "run")
    first = _run(tiny_cfg("run.max_steps=1", run_dir=run_dir))
    state_file = Path(first["checkpoint"], "engine", "mp_rank_00_model_states.pt")
    state_file.write_bytes(state_file.read_bytes()[:1000])
    with pytest.raises(UserError, match=r"mp_rank_00_model_states\.pt is truncated or corrupt") as info:
        _run(tiny_cfg(run_dir=run_dir))
    assert "\n" not in str(info.value)


def test_resume_with_another_model_is_refused(tiny_cfg, tmp_path):
    run_dir = str(tmp_path / "run")
    _run(tiny_cfg("run.max_steps=1", run_dir=run_dir))
    with pytest.raises(UserError, match=r"model\.width differ"):
        _run(tiny_cfg("model.width=16", run_dir=run_dir))


def test_resume_from_an_explicit_earlier_checkpoint_rewrites_later_ones_exactly(tiny_cfg, tmp_path):
    run_dir = str(tmp_path / "run")
    common = ("run.checkpoint_every_steps=2", "run.keep_last=3", "run.max_steps=4")
    first = _run(tiny_cfg(*common, run_dir=run_dir))
    _, step4 = read_inference_checkpoint(first["checkpoint"])
    step2_url = first["checkpoint"].replace("step-000000004", "step-000000002")
    again = _run(tiny_cfg(*common, f"run.resume={step2_url}", run_dir=run_dir))
    assert again["resumed_from"] == step2_url and again["checkpoint"] == first["checkpoint"]
    _, rewritten = read_inference_checkpoint(first["checkpoint"])  # committed again, same weights
    _assert_bitwise_equal(step4, rewritten)
