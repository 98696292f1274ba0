"""``padnet-dist status``: what a user sees of a run from its pipeline.json, in a local dir or a bucket."""

from __future__ import annotations

import json

import pytest

from padnet_dist.cli import main
from padnet_dist.pipeline.lease import acquire
from padnet_dist.pipeline.state import save_state
from padnet_dist.storage import join_url, storage_for


def _state(run_dir: str) -> dict:
    phase_dir = join_url(run_dir, "phase1")
    return {
        "version": 1, "run_dir": run_dir, "backend": "slurm", "config": ["--config", "c.yaml"], "best": {
            "metric": "semantic.miou", "value": 0.41, "phase": 1, "step": 20, "checkpoint": f"{phase_dir}/x"},
        "jobs": {
            "phase1": {"kind": "train", "state": "running", "backend_id": "4242", "attempts": 2, "started_at": 100.0,
                       "ended_at": None, "phase_dir": phase_dir},
            "eval-phase1-step-000000020": {
                "kind": "eval", "state": "succeeded", "backend_id": "4243", "attempts": 1, "started_at": 10.0,
                "ended_at": 40.0, "metrics": {"semantic": {"miou": 0.41, "pixel_acc": 0.8}, "depth": {"rel": 0.2}}},
        },
    }  # fmt: skip


@pytest.fixture(params=["local", "s3"])
def run_dir(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "run"), [], None
    s3 = request.getfixturevalue("s3")
    return s3.url("runs/r"), ["--endpoint-url", s3.endpoint_url], s3.storage_cfg


def test_status_shows_each_jobs_state_id_duration_retries_metrics_and_the_coordinator(run_dir, capsys):
    url, extra, storage_cfg = run_dir
    storage = storage_for(url, storage_cfg)
    save_state(_state(url), storage)
    storage.write_bytes(join_url(url, "phase1/logs/rank0.jsonl"),
                        b'{"step": 7, "epoch": 0, "total": 1.5, "samples_per_s": 3.0}\n{"step": 8, "epo')  # fmt: skip
    assert main(["status", url, *extra]) == 0
    out = capsys.readouterr().out
    assert "run " + url + " (slurm backend)" in out and "coordinator: none holds the run" in out
    phase1 = next(line for line in out.splitlines() if line.startswith("phase1 "))
    assert "running" in phase1 and "4242" in phase1 and "step=7" in phase1 and "total=1.5" in phase1
    evaluation = next(line for line in out.splitlines() if line.startswith("eval-phase1-step-000000020"))
    assert "30 s" in evaluation and "semantic.miou=0.41" in evaluation and "depth.rel=0.2" in evaluation
    assert "best: semantic.miou 0.41 (phase 1)" in out
    lease = acquire(url, 60, storage_cfg)
    assert main(["status", url, "--json", *extra]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["jobs"]["phase1"]["retries"] == 1 and data["jobs"]["eval-phase1-step-000000020"]["duration_s"] == 30
    assert data["lease"]["token"] == lease.token and data["best"]["value"] == 0.41


def test_status_of_a_dir_without_a_pipeline_says_so(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "pipeline.json does not exist" in capsys.readouterr().err


def test_status_of_a_run_with_a_shared_phase1_says_where_it_comes_from(tmp_path, capsys):
    url = str(tmp_path / "run")
    state = _state(url) | {"jobs": {}, "best": None}
    state["phase1_from"] = {"run_dir": "/sweeps/t2/t2_a_sp/seed0", "state": "ready",
                            "checkpoint": "/sweeps/t2/t2_a_sp/seed0/phase1/checkpoints/step-000000040", "reason": None}  # fmt: skip
    save_state(state, storage_for(url))
    assert main(["status", url]) == 0
    assert ("phase 1 from /sweeps/t2/t2_a_sp/seed0: ready (/sweeps/t2/t2_a_sp/seed0/phase1/checkpoints/step-000000040)"
            in capsys.readouterr().out)  # fmt: skip
