"""``padnet-dist pipeline --backend ray`` end to end on the session's real Ray cluster, through the Jobs API.

``--detach`` submits the coordinator itself as a Ray job; from inside it, it submits the data check, phase 1 as
``ray-train`` with two Ray Train workers (one on the head, one on the worker node), the evaluations, phase 2 (and
the report) as Ray jobs, each with this checkout uploaded as its working directory. Phase 1's rank 1 is sent SIGTERM
after the first commit: every rank commits and stops, Ray has no restart left (pipeline jobs run ``ray-train`` with
``--max-failures 0``), so the entrypoint exits 75; the backend reports it interrupted and the coordinator submits
phase 1 again, which resumes from the commit. The test follows the coordinator's own Ray job to its end, then reads
the run's ``pipeline.json``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from padnet_dist.pipeline.backend import JobState
from padnet_dist.pipeline.ray import RayBackend
from padnet_dist.pipeline.state import state_url
from padnet_dist.storage import storage_for
from padnet_dist.train import checkpoint as ckpt
from tests.helpers import REPO_ROOT
from tests.helpers.tiny_run import tiny_overrides, write_tiny_shards

pytestmark = pytest.mark.integration

PADNET = str(Path(sys.executable).parent / "padnet-dist")
TIMEOUT_S = 1200.0
NUM_STEPS = 12  # phase 1: 16 samples over 2 workers of batch 2, 3 epochs; a commit every 2 steps


def _state(run_dir: str) -> dict:
    st = storage_for(run_dir)
    return json.loads(st.read_bytes(state_url(run_dir))) if st.exists(state_url(run_dir)) else {"jobs": {}}


def _wait_for(what: str, check, backend: RayBackend, coordinator: str, deadline: float):
    while not (found := check()):
        if backend.status(coordinator).state.done or time.monotonic() > deadline:
            pytest.fail(f"no {what}: {backend.status(coordinator)}\n{backend.client.get_job_logs(coordinator)[-6000:]}")
        time.sleep(0.5)
    return found


def test_detached_pipeline_runs_every_job_as_a_ray_job(ray_cluster, tmp_path):
    manifest = write_tiny_shards(str(tmp_path / "shards"))
    val = write_tiny_shards(str(tmp_path / "shards"), num=4, split="val")
    run_dir = str(tmp_path / "run")
    command = [
        PADNET, "pipeline", "--config", "configs/tiny.yaml", *tiny_overrides(manifest, run_dir),
        f"data.val_manifest={val}", "phases.phase1.epochs=3", "run.checkpoint_every_steps=2", "--backend", "ray", "pipeline.nodes=1", "pipeline.ranks_per_node=2",
        "pipeline.poll_every_s=1", f"pipeline.ray_address={ray_cluster.dashboard}", "--detach",
    ]  # fmt: skip
    started = time.monotonic()
    detached = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert detached.returncode == 0, detached.stderr
    coordinator = re.search(r"ray id (padnet-coordinator-[0-9a-f]+)", detached.stdout + detached.stderr).group(1)

    backend = RayBackend(address=ray_cluster.dashboard)
    deadline = time.monotonic() + TIMEOUT_S

    # SIGTERM to rank 1 of phase 1 after its first commit: exit 75, and the coordinator submits phase 1 again
    phase1_dir, st = ckpt.phase_dir(run_dir, 1), storage_for(run_dir)
    _wait_for("commit of phase 1", lambda: ckpt.list_committed(phase1_dir, st), backend, coordinator, deadline)
    first_id = _state(run_dir)["jobs"]["phase1"]["backend_id"]
    pid = re.search(r"rank 1 of 2, .*pid (\d+), phase 1", backend.client.get_job_logs(first_id))
    os.kill(int(pid.group(1)), signal.SIGTERM)
    _wait_for("resubmission of phase 1", lambda: _state(run_dir)["jobs"]["phase1"]["attempts"] >= 2, backend,
              coordinator, deadline)  # fmt: skip
    interrupted = backend.status(first_id)
    assert (interrupted.state, interrupted.exit_code) == (JobState.INTERRUPTED, 75), interrupted
    first_log = Path(interrupted.log).read_text()  # copied to the attempt's log location once it ended
    assert "rank 1: SIGTERM: committing after this step" in first_log and "a restart resumes there" in first_log
    while not (status := backend.status(coordinator)).state.done:
        if time.monotonic() > deadline:
            backend.cancel(coordinator)
            pytest.fail(f"the coordinator job is still {status.state} after {TIMEOUT_S:.0f} s")
        time.sleep(2)
    logs = backend.client.get_job_logs(coordinator)
    assert status.state == JobState.SUCCEEDED, logs[-6000:]

    st = storage_for(run_dir)
    state = json.loads(st.read_bytes(state_url(run_dir)))
    jobs = state["jobs"]
    assert state["backend"] == "ray"
    assert {n: r["state"] for n, r in jobs.items() if r["state"] != "succeeded"} == {}, jobs
    assert {"data", "phase1", "phase2", "report"} <= set(jobs)
    # one resubmission after the interruption; any other attempt is a retry of a failure (on a shared, loaded
    # machine Ray's memory monitor may kill a worker), counted in the record's failures
    assert jobs["phase1"]["attempts"] == 2 + jobs["phase1"]["failures"], jobs["phase1"]
    assert all(r["attempts"] == 1 + r["failures"] for n, r in jobs.items() if n != "phase1"), jobs
    for name, rec in jobs.items():  # every job was a Ray job the head still knows, with its logs copied
        assert rec["backend_id"].startswith(f"padnet-{name}-"), rec
        assert backend.status(rec["backend_id"]).state == JobState.SUCCEEDED
        assert Path(rec["log"]).is_file(), rec
    phase1_log = Path(jobs["phase1"]["log"]).read_text()
    assert re.search(r"rank 1 of 2, .*phase 1", phase1_log), phase1_log[-3000:]  # Ray Train placed two workers
    resumed = json.loads([line for line in phase1_log.splitlines() if line.startswith("{")][-1])
    assert resumed["step"] == NUM_STEPS and resumed["resumed_from"] is not None, resumed
    records = [json.loads(line) for line in Path(run_dir, "phase1/logs/rank0.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if not any(k.startswith("val/") for k in r)] == list(range(1, NUM_STEPS + 1))
    evals = {n: r for n, r in jobs.items() if r["kind"] == "eval"}
    assert {r["phase"] for r in evals.values()} == {1, 2}
    for rec in evals.values():
        assert 0.0 <= rec["metrics"]["semantic"]["miou"] <= 1.0
    assert state["best"]["checkpoint"] in {r["checkpoint"] for r in evals.values()}
    assert f"report: {run_dir}/report.html" in logs
    assert Path(run_dir, "report.html").exists() and Path(run_dir, "report.json").exists()

    # `padnet-dist status` shows the jobs by their Ray submission ids
    shown = subprocess.run([PADNET, "status", run_dir], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and jobs["phase2"]["backend_id"] in shown.stdout, shown.stdout
    print(
        f"\nray pipeline: {time.monotonic() - started:.0f} s wall; jobs: "
        + ", ".join(f"{n} {r['ended_at'] - r['started_at']:.0f} s" for n, r in jobs.items()),
        file=sys.stderr,
    )
