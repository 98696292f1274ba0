"""A run dir in S3 (real moto_server): checkpoints committed there, resumed exactly, logs published, exported."""

from __future__ import annotations

import json

import pytest
import torch

from padnet_dist.cli import main as cli_main
from padnet_dist.launch.env import free_port
from padnet_dist.storage import join_url, storage_for
from padnet_dist.train import checkpoint as ckpt
from padnet_dist.train import read_inference_checkpoint, train
from padnet_dist.world import World

pytestmark = pytest.mark.integration


def test_s3_run_dir_commits_resumes_and_exports(s3, tiny_cfg, tmp_path):
    run_dir = s3.url("runs/tiny")
    endpoint = f"storage.endpoint_url={s3.endpoint_url}"
    common = ("phases.phase1.epochs=1", "run.checkpoint_every_steps=3", "run.keep_last=1", endpoint)
    st = storage_for(run_dir, s3.storage_cfg)
    phase_dir = ckpt.phase_dir(run_dir, 1)

    first = train(tiny_cfg(*common, "run.max_steps=3", run_dir=run_dir), World(master_port=free_port()))
    assert first["checkpoint"] == join_url(phase_dir, "checkpoints", "step-000000003")
    names = {u.rsplit("/", 1)[1] for u in st.list(first["checkpoint"])}
    assert {"COMMITTED", "mp_rank_00_model_states.pt", "trainer.json", "loader-rank0.json"} <= names
    assert "model.pt" not in names  # the weights are stored once, in DeepSpeed's module states
    log_url = join_url(phase_dir, "logs", "rank0.jsonl")
    assert [json.loads(line)["step"] for line in st.read_bytes(log_url).decode().splitlines()] == [1, 2, 3]

    resumed = train(tiny_cfg(*common, run_dir=run_dir), World(master_port=free_port()))
    assert resumed["resumed_from"] == first["checkpoint"] and resumed["step"] == 8
    assert [s for s, _ in ckpt.list_committed(phase_dir, st)] == [8]  # keep_last=1 dropped step 3
    assert [json.loads(line)["step"] for line in st.read_bytes(log_url).decode().splitlines()] == list(range(1, 9))

    straight = train(tiny_cfg(*common[:-1], run_dir=str(tmp_path / "local")), World(master_port=free_port()))
    _, want = read_inference_checkpoint(straight["checkpoint"])
    _, got = read_inference_checkpoint(run_dir, s3.storage_cfg)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)

    out = tmp_path / "padnet.pt"
    assert cli_main(["export", "--checkpoint", run_dir, "--out", str(out), "--endpoint-url", s3.endpoint_url]) == 0
    exported = torch.load(out, weights_only=True)
    assert all(torch.equal(exported[k], want[k]) for k in want)
