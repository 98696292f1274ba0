"""One evaluation path: the training loop's evaluation and ``padnet-dist eval`` give the same metrics for the same
weights, both written as strict JSON."""

from __future__ import annotations

import json
import os

import pytest
import torch

from padnet_dist.cli import main
from padnet_dist.config import load_config
from padnet_dist.eval.evaluate import NYUD_DEPTH_RANGE_M, depth_range_m
from padnet_dist.launch.env import free_port
from padnet_dist.train import train
from padnet_dist.world import World
from tests.helpers import REPO_ROOT
from tests.helpers.tiny_run import tiny_overrides, write_tiny_shards


def _strict(text: str) -> dict:
    def refuse(token: str):
        raise AssertionError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_depth_range_follows_the_nyud_convention_unless_a_cap_is_given():
    assert depth_range_m("nyud", None) == NYUD_DEPTH_RANGE_M == (1e-3, 10.0)
    assert depth_range_m("cityscapes", None) == (0.0, None)
    assert depth_range_m("nyud", 80.0) == (0.0, 80.0) and depth_range_m("nyud", 0.0) == (0.0, None)


@pytest.mark.slow
def test_training_evaluation_equals_the_eval_command_on_its_checkpoint(tmp_path, monkeypatch):
    """After the last epoch the loop scores the same weights it then commits; ``padnet-dist eval`` on that checkpoint
    must give the same numbers. One thread everywhere, so the per-sample predictions are bitwise equal and the
    metrics may be compared exactly (the sums run in the same order on one rank)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_manifest = write_tiny_shards(str(tmp_path / "shards"), num=4)
        val_manifest = write_tiny_shards(str(tmp_path / "shards"), num=3, split="val")
        overrides = tiny_overrides(train_manifest, str(tmp_path / "run"), "run.checkpoint_every_steps=0")
        overrides += [f"data.val_manifest={val_manifest}"]
        cfg = load_config(REPO_ROOT / "configs" / "tiny.yaml", overrides)
        summary = train(cfg, World(master_port=free_port()))
        step = summary["step"]
        during = _strict((tmp_path / "run" / "phase1" / "eval" / f"step-{step:09d}.json").read_text())
        assert main(["eval", "--checkpoint", summary["checkpoint"]]) == 0
        after = _strict(open(os.path.join(summary["checkpoint"], "metrics.json")).read())
    finally:
        torch.set_num_threads(before)
    assert during["split_manifest"] == after["split_manifest"] == val_manifest
    assert during["num_samples"] == after["num_samples"] == 3 and during["dataset"] == "synthetic"
    assert "semantic" in during and "depth" not in during  # phase 1 scores its scene-parsing output only
    assert during["semantic"] == after["semantic"]
