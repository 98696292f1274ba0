"""``padnet-dist export``: the checkpoint's fp32 state dict as one torch.save file, from a run dir too."""

from __future__ import annotations

import os

import torch

from padnet_dist.cli import main
from padnet_dist.config import load_config
from padnet_dist.train.weights import MODULE_STATES
from tests.helpers.checkpoint import write_checkpoint

TINY = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "tiny.yaml")


def test_export_writes_the_checkpoints_state_dict(tmp_path, capsys):
    ckpt = write_checkpoint(str(tmp_path / "run"), load_config(TINY))
    out = tmp_path / "out" / "padnet.pt"
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(out)]) == 0  # newest of the run
    exported = torch.load(out, weights_only=True)
    saved = torch.load(os.path.join(ckpt, MODULE_STATES), weights_only=True)["module"]
    assert exported.keys() == saved.keys() and all(torch.equal(exported[k], saved[k]) for k in saved)
    printed = capsys.readouterr().out
    assert f"wrote {out}: {len(saved)} tensors" in printed and "resnet18" in printed


def test_export_of_a_dir_without_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["export", "--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "holds no committed checkpoint" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.pt").exists()
