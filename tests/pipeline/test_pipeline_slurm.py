"""``padnet-dist pipeline --backend slurm`` end to end on the real two-node local Slurm cluster, detached.

One run, as a user would drive it: ``--detach`` submits the coordinator as a ``slurm/task.sh`` job; it submits the
data check, phase 1 on two nodes, its evaluation, phase 2, its evaluation (and the report where the command exists)
with ``sbatch``. Phase 1 is sent SIGTERM mid-run (``scancel --signal=TERM``: what a preemption delivers); its ranks
commit and exit 75 and, with self-requeue off (``PADNET_MAX_REQUEUES=0``), the job ends ``FAILED`` 75, which the
coordinator resubmits; the new job resumes from the commit. Then the detached coordinator is killed, and the same
command in the foreground takes over once its lease expires: it re-attaches to the jobs still on Slurm (nothing is
submitted twice) and completes the run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from padnet_dist.pipeline.state import state_url
from padnet_dist.storage import storage_for
from padnet_dist.train import checkpoint as ckpt
from tests.helpers import REPO_ROOT
from tests.helpers.tiny_run import tiny_overrides, write_tiny_shards

pytestmark = pytest.mark.integration

PADNET = str(Path(sys.executable).parent / "padnet-dist")
TIMEOUT_S = 1200.0
LEASE_TTL_S = 20
NUM_STEPS = 12  # phase 1: 16 samples over 2 ranks of batch 2, 3 epochs; a commit every 2 steps


def _state(run_dir: str) -> dict:
    st = storage_for(run_dir)
    url = state_url(run_dir)
    return json.loads(st.read_bytes(url)) if st.exists(url) else {"jobs": {}}


def _wait_for(what: str, check, run_dir: str, timeout_s: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} in {timeout_s:.0f} s; pipeline.json:\n{json.dumps(_state(run_dir), indent=1)}")
        time.sleep(0.5)
    return found


def _scontrol(cluster, job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], env=cluster.env(), capture_output=True,
                         text=True).stdout  # fmt: skip
    return dict(re.findall(r"(\w+)=(\S*)", out))


def test_detached_pipeline_with_a_sigterm_resubmission_and_a_coordinator_takeover(slurm_cluster, tmp_path):
    manifest = write_tiny_shards(str(tmp_path / "shards"))
    val = write_tiny_shards(str(tmp_path / "shards"), num=4, split="val")
    run_dir = str(tmp_path / "run")
    command = [
        "pipeline", "--config", "configs/tiny.yaml", *tiny_overrides(manifest, run_dir),
        f"data.val_manifest={val}", "phases.phase1.epochs=3", "run.checkpoint_every_steps=2",
        "--backend", "slurm", "pipeline.nodes=2", "pipeline.ranks_per_node=1", "pipeline.poll_every_s=1",
        f"pipeline.lease_ttl_s={LEASE_TTL_S}", "pipeline.slurm_args=[--time=30]",
    ]  # fmt: skip
    env = slurm_cluster.env()
    env = {k: v for k, v in env.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_")) or k == "SLURM_CONF"}
    env.update(OMP_NUM_THREADS="1", PADNET_MAX_REQUEUES="0")
    started = time.monotonic()

    detached = subprocess.run([PADNET, *command, "--detach"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
    assert detached.returncode == 0, detached.stderr
    coordinator = re.search(r"slurm id (\d+)", detached.stdout + detached.stderr).group(1)
    assert _scontrol(slurm_cluster, coordinator)["JobName"] == "padnet-coordinator"

    # SIGTERM to phase 1 after its first commit: exit 75, and the coordinator submits it again
    phase1_dir, st = ckpt.phase_dir(run_dir, 1), storage_for(run_dir)
    _wait_for("commit of phase 1", lambda: ckpt.list_committed(phase1_dir, st), run_dir)
    first_id = _state(run_dir)["jobs"]["phase1"]["backend_id"]
    subprocess.run(["scancel", "--signal=TERM", first_id], env=slurm_cluster.env(), check=True)
    signalled_at = time.monotonic()
    second = _wait_for("resubmission of phase 1",
                       lambda: (j := _state(run_dir)["jobs"]["phase1"])["attempts"] == 2 and j, run_dir)  # fmt: skip
    assert second["backend_id"] != first_id
    first = _scontrol(slurm_cluster, first_id)
    assert (first["JobState"], first["ExitCode"], first["NumNodes"]) == ("FAILED", "75:0", "2"), first
    interrupted_log = Path(run_dir, "logs", "phase1.1.log").read_text()
    summary = json.loads([line for line in interrupted_log.splitlines() if line.startswith("{")][-1])
    assert summary["stopped_by_signal"] and not summary["finished"] and summary["step"] < NUM_STEPS, summary

    # The detached coordinator dies (its job is cancelled); the same command takes the run over after the TTL.
    subprocess.run(["scancel", coordinator], env=slurm_cluster.env(), check=True)
    _wait_for("end of the coordinator job", lambda: _scontrol(slurm_cluster, coordinator)["JobState"] == "CANCELLED",
              run_dir)  # fmt: skip
    time.sleep(LEASE_TTL_S + 1)
    remaining_s = TIMEOUT_S - (time.monotonic() - started)
    takeover = subprocess.run([PADNET, *command], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=remaining_s)  # fmt: skip
    assert takeover.returncode == 0, f"{takeover.stdout[-4000:]}\n{takeover.stderr[-4000:]}"

    state = _state(run_dir)
    jobs = state["jobs"]
    assert {n: r["state"] for n, r in jobs.items() if r["state"] != "succeeded"} == {}, jobs
    assert jobs["phase1"]["attempts"] == 2 and jobs["phase1"]["backend_id"] == second["backend_id"]  # re-attached
    assert all(r["attempts"] == 1 for n, r in jobs.items() if n != "phase1"), jobs
    assert {"data", "phase1", "phase2"} <= set(jobs)
    assert jobs["phase1"]["step"] == NUM_STEPS
    for rank in (0, 1):  # the resubmitted job resumed from the commit: each step trained and logged once
        records = [json.loads(line) for line in Path(run_dir, f"phase1/logs/rank{rank}.jsonl").read_text().splitlines()]
        trained = [r["step"] for r in records if not any(k.startswith("val/") for k in r)]  # not the phase's own eval
        assert trained == list(range(1, NUM_STEPS + 1))
    resumed = json.loads([line for line in Path(jobs["phase1"]["log"]).read_text().splitlines()
                          if line.startswith("{")][-1])  # fmt: skip
    assert resumed["resumed_from"] == summary["checkpoint"] and resumed["finished"], resumed
    evals = {n: r for n, r in jobs.items() if r["kind"] == "eval"}
    assert {r["phase"] for r in evals.values()} == {1, 2}
    for rec in evals.values():
        assert 0.0 <= rec["metrics"]["semantic"]["miou"] <= 1.0
    assert state["best"]["checkpoint"] in {r["checkpoint"] for r in evals.values()}
    if "report" in jobs:
        assert f"report: {run_dir}/report.html" in takeover.stdout
        assert Path(run_dir, "report.html").exists()
    for rec in jobs.values():  # every job's Slurm output is where pipeline.json says
        assert Path(rec["log"]).is_file(), rec
    print(
        f"\nslurm pipeline: {time.monotonic() - started:.0f} s wall; phase 1 interrupted at step {summary['step']} "
        f"(the pipeline ended {time.monotonic() - signalled_at:.0f} s after that SIGTERM); jobs: "
        + ", ".join(f"{n} {r['ended_at'] - r['started_at']:.0f} s" for n, r in jobs.items()),
        file=sys.stderr,
    )
