"""The real sbatch scripts on a real two-node Slurm cluster (``cluster/slurm_local``), as a user submits them.

- Phase 1 on two nodes with two DataLoader workers per rank, then phase 2 and evaluation queued behind it with
  ``--dependency=afterok``. Phase 1 is stopped mid-epoch by ``scancel --signal=TERM`` (what a preemption or the
  ``--signal`` before a time limit delivers: every process of the step, workers included); it commits, requeues
  itself, resumes and completes while phase 2 waits; its final weights equal those of an uninterrupted job.
- A job that reaches its ``--time`` limit: the ``--signal`` margin's SIGTERM, commit, requeue, resume, same weights.
- The launch layer finds the rendezvous host by resolving the node list (no MASTER_ADDR anywhere).

The training jobs are submitted at once (each node has room for three) so their start-ups and requeue delays
overlap. The GPU defaults of ``slurm/train_cityscapes.sh`` are overridden on the sbatch command line only, as a
user would for a CPU run: ``--nodes=2 --ntasks-per-node=1 --gpus-per-node=0 --cpus-per-task=1``, ``configs/tiny.yaml``.
The cluster is the session's ``slurm_cluster`` (``tests/conftest.py``), shared with the pipeline's Slurm tests.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cluster.slurm_local.cluster import NODE_ADDRS, LocalSlurmCluster
from padnet_dist.storage import storage_for
from padnet_dist.train import checkpoint as ckpt
from padnet_dist.train import read_inference_checkpoint
from tests.helpers import REPO_ROOT
from tests.helpers.tiny_run import tiny_overrides, write_tiny_shards

pytestmark = pytest.mark.integration

SCRIPT = "slurm/train_cityscapes.sh"
CPU_RUN = ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=0", "--cpus-per-task=1")
TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
                   "BOOT_FAIL", "DEADLINE"}  # fmt: skip
# A bound per job, not an expectation. The first DeepSpeed init compiles a C++ op (~1.5 min) unless
# TORCH_EXTENSIONS_DIR (shared with tests/train) already holds it.
JOB_TIMEOUT_S = 600.0
# 16 samples over 2 ranks of batch 2: 4 steps per epoch, 3 epochs. Two workers per rank, as real presets have.
STEPS_PER_EPOCH, NUM_STEPS = 4, 12
PHASE1 = ("phases.phase1.epochs=3", "run.checkpoint_every_steps=2", "data.num_workers=2")


def _job_env(cluster: LocalSlurmCluster, **extra: str) -> dict[str, str]:
    # Keep an enclosing launcher's (torchrun, an outer Slurm job) rank and job variables away from the job.
    dropped = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")
    base = {
        k: v for k, v in os.environ.items() if k not in dropped and not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))
    }
    env = cluster.env(base)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def _sbatch(cluster: LocalSlurmCluster, out_dir: Path, *args: str, env: dict[str, str] | None = None) -> int:
    job_env = env or _job_env(cluster)
    # srun honours SLURM_STDOUTMODE like --output: one file per task, named by Slurm's node (%n) and task (%t) ids
    job_env.setdefault("SLURM_STDOUTMODE", str(out_dir / "%x-%j-node%n-rank%t.out"))
    cmd = ["sbatch", "--parsable", f"--output={out_dir}/%x-%j.out", *CPU_RUN, *args]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=job_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr}"
    return int(proc.stdout.strip().split(";")[0])


def _job(cluster: LocalSlurmCluster, job_id: int) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", str(job_id)], env=cluster.env(), capture_output=True, text=True
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def _wait(cluster: LocalSlurmCluster, job_id: int, out_dir: Path, timeout_s: float = JOB_TIMEOUT_S) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while (job := _job(cluster, job_id)).get("JobState") not in TERMINAL_STATES:
        if time.monotonic() > deadline:
            subprocess.run(["scancel", str(job_id)], env=cluster.env())
            pytest.fail(f"job {job_id} not done in {timeout_s:.0f} s: {job.get('JobState')}\n{_outputs(out_dir)}")
        time.sleep(1)
    return job


def _wait_for(what: str, check, out_dir: Path, timeout_s: float = JOB_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} in {timeout_s:.0f} s\n{_outputs(out_dir)}")
        time.sleep(0.2)
    return found


def _run_ok(cluster: LocalSlurmCluster, *cmd: str) -> bool:
    return subprocess.run(cmd, env=cluster.env(), capture_output=True, timeout=60).returncode == 0


def _outputs(out_dir: Path) -> str:
    return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(out_dir.glob("*.out")))


def _summaries(path: Path) -> list[dict]:
    """Rank 0's summary line of every run of a job (a requeued job appends to the same file)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def _elapsed_s(job: dict[str, str]) -> int:
    h, m, s = (["0", "0", "0"] + job["RunTime"].split("-")[-1].split(":"))[-3:]
    return int(h) * 3600 + int(m) * 60 + int(s)


def _weights(ckpt_url: str) -> dict[str, torch.Tensor]:
    return read_inference_checkpoint(ckpt_url)[1]


def _assert_bitwise_equal(want: dict, got: dict) -> None:
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), f"tensor {k} differs"


def _logged_steps(run_dir: str, rank: int) -> list[int]:
    lines = Path(run_dir, f"phase1/logs/rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


@pytest.fixture(scope="module")
def jobs(slurm_cluster, tmp_path_factory):
    """Submitted at once: an uninterrupted reference, the phase 1 -> phase 2 -> eval chain, a time-limited job."""
    root = tmp_path_factory.mktemp("slurm")
    manifest = write_tiny_shards(str(root / "shards"))
    val_manifest = write_tiny_shards(str(root / "shards"), num=4, split="val")
    out_dir = root / "slurm-out"
    out_dir.mkdir()
    run = {name: str(root / name) for name in ("reference", "chain", "timelimit")}

    def submit(*args: str, run_dir: str, extra: tuple[str, ...] = PHASE1, env=None) -> int:
        tiny = ("--config", "configs/tiny.yaml", *tiny_overrides(manifest, run_dir), *extra)
        return _sbatch(slurm_cluster, out_dir, *args, SCRIPT, *tiny, env=env)

    ids = SimpleNamespace(reference=submit("--job-name=ref", "--time=10", run_dir=run["reference"]))
    ids.p1 = submit("--job-name=p1", "--time=10", run_dir=run["chain"])
    ids.p2 = submit(
        "--job-name=p2", "--time=10", f"--dependency=afterok:{ids.p1}", run_dir=run["chain"],
        extra=("run.max_steps=1",), env=_job_env(slurm_cluster, PHASE="2"),
    )  # fmt: skip
    ids.ev = _sbatch(
        slurm_cluster, out_dir, "--job-name=ev", "--time=10", f"--dependency=afterok:{ids.p2}", "slurm/eval.sh",
        *("--checkpoint", f"{run['chain']}/phase2", "--split-manifest", val_manifest),
    )  # fmt: skip
    # Slurm sends the --signal up to ~30 s early (its time-limit check runs every 30 s): TERM@15 on a 1 min limit
    # comes 15-45 s after the start, during start-up or early training, and leaves time to commit before the kill.
    ids.timelimit = submit("--job-name=tl", "--time=1", "--signal=TERM@15", run_dir=run["timelimit"])
    # Its requeued run would again get 1 minute, most of it start-up (a real job's limit is hours): once requeued,
    # it gets room to finish in one more run, so the test stays short.
    done = threading.Event()

    def raise_limit_once_requeued() -> None:
        while not done.is_set():
            if _job(slurm_cluster, ids.timelimit).get("Restarts", "0") != "0" and _run_ok(
                slurm_cluster, "scontrol", "update", f"JobId={ids.timelimit}", "TimeLimit=10"
            ):
                return
            time.sleep(0.5)

    watcher = threading.Thread(target=raise_limit_once_requeued, daemon=True)
    watcher.start()
    yield SimpleNamespace(ids=ids, run=run, out_dir=out_dir, manifest=manifest)
    done.set()
    watcher.join()
    subprocess.run(["scancel", *(str(i) for i in vars(ids).values())], env=slurm_cluster.env(), capture_output=True)


def _reference_weights(slurm_cluster, jobs) -> dict[str, torch.Tensor]:
    """The final weights of the uninterrupted job, waited for only when a test under way needs them."""
    if not hasattr(jobs, "reference_weights"):
        job = _wait(slurm_cluster, jobs.ids.reference, jobs.out_dir)
        assert (job["JobState"], job["Restarts"]) == ("COMPLETED", "0"), f"{job}\n{_outputs(jobs.out_dir)}"
        final = ckpt.newest_committed(ckpt.phase_dir(jobs.run["reference"], 1), storage_for(jobs.run["reference"]))
        assert final is not None and final.endswith(f"step-{NUM_STEPS:09d}")
        jobs.reference_weights = _weights(final)
    return jobs.reference_weights


def test_signalled_phase1_commits_requeues_resumes_then_phase2_and_eval_run(slurm_cluster, jobs):
    ids, run_dir, out_dir = jobs.ids, jobs.run["chain"], jobs.out_dir
    st = storage_for(run_dir)
    phase1 = ckpt.phase_dir(run_dir, 1)
    _wait_for("first committed checkpoint of p1", lambda: ckpt.list_committed(phase1, st), out_dir)
    subprocess.run(["scancel", "--signal=TERM", str(ids.p1)], env=slurm_cluster.env(), check=True)
    signalled_at = time.time()

    # the job requeues itself (same id); phase 2 keeps waiting on it
    requeued = _wait_for("requeue of p1", lambda: (j := _job(slurm_cluster, ids.p1))["Restarts"] == "1" and j, out_dir)
    assert requeued["JobState"] in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED"), requeued
    waiting = _job(slurm_cluster, ids.p2)
    assert (waiting["JobState"], waiting["Reason"]) == ("PENDING", "Dependency"), waiting
    first_run = _summaries(out_dir / f"p1-{ids.p1}-node0-rank0.out")[0]
    interrupted = first_run["step"]
    assert first_run["stopped_by_signal"] and not first_run["finished"], first_run
    assert interrupted % STEPS_PER_EPOCH != 0, f"stopped at an epoch boundary, not mid-epoch: {first_run}"
    marker = json.loads(st.read_bytes(f"{first_run['checkpoint']}/{ckpt.COMMIT_MARKER}"))
    assert marker["step"] == interrupted
    batch_log = (out_dir / f"p1-{ids.p1}.out").read_text()
    assert "requeueing job" in batch_log and "killed by signal" not in _outputs(out_dir)

    job1 = _wait(slurm_cluster, ids.p1, out_dir)
    assert (job1["JobState"], job1["Restarts"], job1["ExitCode"]) == ("COMPLETED", "1", "0:0"), f"{job1}"
    assert (job1["NumNodes"], job1["NodeList"]) == ("2", "n[1-2]")
    resumed = _summaries(out_dir / f"p1-{ids.p1}-node0-rank0.out")[-1]
    assert resumed["resumed_from"] == first_run["checkpoint"] and resumed["step"] == NUM_STEPS and resumed["finished"]
    _assert_bitwise_equal(_reference_weights(slurm_cluster, jobs), _weights(resumed["checkpoint"]))
    for rank in (0, 1):  # steps after the commit are redone once and logged once
        assert _logged_steps(run_dir, rank) == list(range(1, NUM_STEPS + 1))
    names = {p.name for p in Path(resumed["checkpoint"]).iterdir()}
    assert {"loader-rank0.json", "loader-rank1.json", "rng-rank0.json", "rng-rank1.json", "trainer.json"} <= names
    # the preset's ZeRO stage 1: each rank saved its own optimiser shard
    shards = sorted(p.name for p in Path(resumed["checkpoint"], "engine").glob("zero_pp_rank_*_optim_states.pt"))
    assert shards == ["zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]

    job2 = _wait(slurm_cluster, ids.p2, out_dir)
    assert job2["JobState"] == "COMPLETED", f"{job2}\n{_outputs(out_dir)}"
    s2 = _summaries(out_dir / f"p2-{ids.p2}-node0-rank0.out")[-1]
    assert (s2["phase"], s2["world_size"], s2["step"]) == (2, 2, 1)
    assert s2["initialised_from"] == resumed["checkpoint"]
    job3 = _wait(slurm_cluster, ids.ev, out_dir)
    assert job3["JobState"] == "COMPLETED", f"{job3}\n{_outputs(out_dir)}"
    metrics = json.loads(Path(s2["checkpoint"], "metrics.json").read_text())
    assert metrics["num_samples"] == 4 and 0.0 <= metrics["semantic"]["miou"] <= 1.0

    # Submitted again after the phase ended, the same command has nothing left to do: it ends at once, exit 0.
    again = _sbatch(slurm_cluster, out_dir, "--job-name=again", "--time=10", SCRIPT, "--config", "configs/tiny.yaml",
                    *tiny_overrides(jobs.manifest, run_dir), *PHASE1)  # fmt: skip
    job4 = _wait(slurm_cluster, again, out_dir)
    assert (job4["JobState"], job4["Restarts"]) == ("COMPLETED", "0"), f"{job4}\n{_outputs(out_dir)}"
    assert _summaries(out_dir / f"again-{again}-node0-rank0.out")[-1]["checkpoint"] == resumed["checkpoint"]
    assert ckpt.list_committed(phase1, st)[-1][1] == resumed["checkpoint"]
    print(
        f"signal -> committed checkpoint: {marker['time'] - signalled_at:.1f} s (step {interrupted}); job wall time: "
        f"phase 1 {_elapsed_s(job1)} s after requeue, phase 2 {_elapsed_s(job2)} s, eval {_elapsed_s(job3)} s, "
        f"finished phase resubmitted {_elapsed_s(job4)} s"
    )


def test_time_limit_commits_requeues_and_resumes_to_the_same_weights(slurm_cluster, jobs):
    ids, run_dir, out_dir = jobs.ids, jobs.run["timelimit"], jobs.out_dir
    job = _wait(slurm_cluster, ids.timelimit, out_dir)
    assert (job["JobState"], job["ExitCode"]) == ("COMPLETED", "0:0"), f"{job}\n{_outputs(out_dir)}"
    runs = _summaries(out_dir / f"tl-{ids.timelimit}-node0-rank0.out")
    assert len(runs) == int(job["Restarts"]) + 1 >= 2, f"{job}\n{runs}"  # stopped by the limit, requeued itself
    for before, after in zip(runs, runs[1:]):
        assert before["stopped_by_signal"] and 0 < before["step"] < NUM_STEPS, before
        assert after["resumed_from"] == before["checkpoint"]
    assert runs[-1]["finished"] and runs[-1]["step"] == NUM_STEPS
    _assert_bitwise_equal(_reference_weights(slurm_cluster, jobs), _weights(runs[-1]["checkpoint"]))
    assert _logged_steps(run_dir, 0) == list(range(1, NUM_STEPS + 1))
    print(f"time limit: runs ended at steps {[r['step'] for r in runs]}; last run {_elapsed_s(job)} s")


def test_ranks_rendezvous_at_the_first_node_of_the_node_list(slurm_cluster, tmp_path):
    # No MASTER_ADDR: each task expands SLURM_JOB_NODELIST with scontrol and resolves its first name.
    code = (
        "import socket; from padnet_dist.launch.env import current_world; w = current_world(); "
        "print(w.rank, w.master_addr, socket.gethostbyname(w.master_addr), w.master_port)"
    )
    proc = subprocess.run(
        ["srun", *CPU_RUN, "--time=2", "--label", sys.executable, "-c", code],
        cwd=REPO_ROOT, env=_job_env(slurm_cluster), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = sorted(line.split(":", 1)[1].split() for line in proc.stdout.strip().splitlines())
    assert [line[:3] for line in lines] == [["0", "n1", NODE_ADDRS["n1"]], ["1", "n1", NODE_ADDRS["n1"]]]
    assert lines[0][3] == lines[1][3] and 20000 <= int(lines[0][3]) < 30000
    assert socket.gethostbyname("n2") == NODE_ADDRS["n2"]


def test_self_requeue_stops_at_padnet_max_requeues(slurm_cluster, tmp_path):
    # The requeue logic of slurm/train.sh on its own: a stand-in for `padnet-dist` that always exits 75, as a rank
    # does after committing a checkpoint on SIGTERM.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "padnet-dist").write_text('#!/bin/sh\necho "run ${SLURM_RESTART_COUNT:-0}"\nexit 75\n')
    (bin_dir / "padnet-dist").chmod(0o755)
    env = _job_env(slurm_cluster, PADNET_MAX_REQUEUES="1", PADNET_VENV=str(tmp_path / "no-venv"))
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    job_id = _sbatch(slurm_cluster, tmp_path, "--job-name=cap", "--nodes=1", "--ntasks-per-node=1", "--time=5",
                     "slurm/train.sh", env=env)  # fmt: skip
    job = _wait(slurm_cluster, job_id, tmp_path, timeout_s=120)
    # requeued once, then it stops: FAILED with the interrupted exit code, so afterok dependents never start
    assert (job["JobState"], job["Restarts"], job["ExitCode"]) == ("FAILED", "1", "75:0"), job
    log = (tmp_path / f"cap-{job_id}.out").read_text()
    assert log.count("requeueing job") == 1 and "PADNET_MAX_REQUEUES=1): not requeueing" in log, log
