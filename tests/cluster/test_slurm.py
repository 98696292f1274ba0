"""The real sbatch scripts on a real two-node Slurm cluster (``cluster/slurm_local``): phase 1 on two nodes, then
phase 2 and evaluation queued behind it with ``--dependency=afterok``, as a user submits them.

The GPU defaults of ``slurm/train_cityscapes.sh`` are overridden on the sbatch command line only, as a user would
for a CPU run: ``--nodes=2 --ntasks-per-node=1 --gpus-per-node=0 --cpus-per-task=1`` and ``--config configs/tiny.yaml``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from cluster.slurm_local.cluster import ClusterError, LocalSlurmCluster, missing_requirements
from padnet_dist.storage import storage_for
from padnet_dist.train import checkpoint as ckpt
from tests.helpers import REPO_ROOT
from tests.helpers.tiny_run import tiny_overrides, write_tiny_shards

pytestmark = pytest.mark.integration

SCRIPT = "slurm/train_cityscapes.sh"
CPU_RUN = ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=0", "--cpus-per-task=1", "--time=10")
TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
                   "BOOT_FAIL", "DEADLINE"}  # fmt: skip
# A bound per job, not an expectation (about 1 min when the host is idle). The first DeepSpeed init compiles a
# C++ op (~1.5 min) unless TORCH_EXTENSIONS_DIR (shared with tests/train) already holds it.
JOB_TIMEOUT_S = 420.0


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"local Slurm cluster: {reason}")
    pytest.skip(f"local Slurm cluster: {reason}")


@pytest.fixture(scope="session")
def slurm_cluster():
    """A two-node Slurm cluster (n1, n2) on this host for the session."""
    reason = missing_requirements()
    if reason:
        _unavailable(reason)
    cluster = LocalSlurmCluster()
    try:
        cluster.start()
    except ClusterError as e:
        _unavailable(f"did not start: {e}")
    print(f"local Slurm cluster up in {cluster.start_s:.1f} s")
    yield cluster
    cluster.stop()


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


def _outputs(out_dir: Path) -> str:
    return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(out_dir.glob("*.out")))


def _summary(path: Path) -> dict:
    return json.loads([line for line in path.read_text().splitlines() if line.startswith("{")][-1])


def _elapsed_s(job: dict[str, str]) -> int:
    h, m, s = (["0", "0", "0"] + job["RunTime"].split("-")[-1].split(":"))[-3:]
    return int(h) * 3600 + int(m) * 60 + int(s)


def test_sbatch_phase1_on_two_nodes_then_phase2_then_eval(slurm_cluster, tmp_path):
    manifest = write_tiny_shards(str(tmp_path / "shards"))
    val_manifest = write_tiny_shards(str(tmp_path / "shards"), num=4, split="val")
    run_dir = str(tmp_path / "run")
    out_dir = tmp_path / "slurm-out"
    out_dir.mkdir()
    tiny = ("--config", "configs/tiny.yaml", *tiny_overrides(manifest, run_dir))

    p1 = _sbatch(slurm_cluster, out_dir, "--job-name=p1", SCRIPT, *tiny, "run.max_steps=2")
    p2 = _sbatch(
        slurm_cluster,
        out_dir,
        "--job-name=p2",
        f"--dependency=afterok:{p1}",
        SCRIPT,
        *tiny,
        "run.max_steps=1",
        env=_job_env(slurm_cluster, PHASE="2"),
    )
    ev = _sbatch(
        slurm_cluster,
        out_dir,
        "--job-name=ev",
        f"--dependency=afterok:{p2}",
        "slurm/eval.sh",
        *("--checkpoint", f"{run_dir}/phase2", "--split-manifest", val_manifest),
    )
    waiting = _job(slurm_cluster, p2)
    if _job(slurm_cluster, p1)["JobState"] not in TERMINAL_STATES:  # phase 2 waits for phase 1
        assert (waiting["JobState"], waiting["Reason"]) == ("PENDING", "Dependency"), waiting

    job1 = _wait(slurm_cluster, p1, out_dir)
    assert job1["JobState"] == "COMPLETED", f"{job1}\n{_outputs(out_dir)}"
    assert (job1["NumNodes"], job1["NodeList"]) == ("2", "n[1-2]")
    # one task per node: Slurm names each task's output by its node id (SLURM_NODEID) and rank (SLURM_PROCID)
    assert (out_dir / f"p1-{p1}-node0-rank0.out").exists() and (out_dir / f"p1-{p1}-node1-rank1.out").exists(), (
        _outputs(out_dir)
    )
    s1 = _summary(out_dir / f"p1-{p1}-node0-rank0.out")
    assert (s1["phase"], s1["world_size"], s1["step"]) == (1, 2, 2)

    st = storage_for(run_dir)
    assert ckpt.list_committed(ckpt.phase_dir(run_dir, 1), st) == [(2, s1["checkpoint"])]
    names = {p.name for p in Path(s1["checkpoint"]).iterdir()}
    assert {"loader-rank0.json", "loader-rank1.json", "rng-rank0.json", "rng-rank1.json", "model.pt", "COMMITTED"} <= (
        names
    )
    # the preset's ZeRO stage 1: each rank saved its own optimiser shard
    shards = sorted(p.name for p in Path(s1["checkpoint"], "engine").glob("zero_pp_rank_*_optim_states.pt"))
    assert shards == ["zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    for rank in (0, 1):
        lines = Path(run_dir, f"phase1/logs/rank{rank}.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in lines] == [1, 2]

    job2 = _wait(slurm_cluster, p2, out_dir)
    assert job2["JobState"] == "COMPLETED", f"{job2}\n{_outputs(out_dir)}"
    s2 = _summary(out_dir / f"p2-{p2}-node0-rank0.out")
    assert (s2["phase"], s2["world_size"], s2["step"]) == (2, 2, 1)
    assert s2["initialised_from"] == s1["checkpoint"]
    assert ckpt.list_committed(ckpt.phase_dir(run_dir, 2), st) == [(1, s2["checkpoint"])]

    job3 = _wait(slurm_cluster, ev, out_dir)
    assert job3["JobState"] == "COMPLETED", f"{job3}\n{_outputs(out_dir)}"
    metrics = json.loads(Path(s2["checkpoint"], "metrics.json").read_text())
    assert metrics["num_samples"] == 4 and 0.0 <= metrics["semantic"]["miou"] <= 1.0
    print(f"job wall time: phase 1 {_elapsed_s(job1)} s, phase 2 {_elapsed_s(job2)} s, eval {_elapsed_s(job3)} s")
