"""``padnet-dist sweep --backend slurm --detach`` on the session's real two-node local Slurm cluster.

A user on a login node: ``--detach`` submits the sweep's driver as a ``slurm/task.sh`` job and returns; the driver
opens both rows' runs and submits every job of both with ``sbatch``, the rows at once. A second ``--detach`` while
it drives is refused in one line (each run's lease is held). The test follows the driver's Slurm job to its end,
checks the runs and the tables, and re-runs the same command in the foreground: it submits nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT
from tests.helpers.tiny_run import write_tiny_shards
from tests.helpers.tiny_sweep import STEMS, attempts, check_sweep, sweep_command

pytestmark = pytest.mark.integration

PADNET = str(Path(sys.executable).parent / "padnet-dist")
TIMEOUT_S = 900.0


def _job_state(cluster, job_id: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], env=cluster.env(), capture_output=True,
                         text=True).stdout  # fmt: skip
    return dict(re.findall(r"(\w+)=(\S*)", out)).get("JobState", "")


def test_detached_sweep_runs_both_rows_as_slurm_jobs_at_once(slurm_cluster, tmp_path):
    train = write_tiny_shards(str(tmp_path / "shards"), num=8)
    val = write_tiny_shards(str(tmp_path / "shards"), num=4, split="val")
    sweep_dir = str(tmp_path / "sweep")
    command = [PADNET, *sweep_command(train, val, sweep_dir, "slurm", "pipeline.slurm_args=[--time=30]")]
    env = {k: v for k, v in slurm_cluster.env().items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))
           or k == "SLURM_CONF"}  # fmt: skip
    env.update(OMP_NUM_THREADS="1")
    started = time.monotonic()

    detached = subprocess.run([*command, "--detach"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
    assert detached.returncode == 0, detached.stdout + detached.stderr
    driver = re.search(r"driver submitted \(slurm id (\d+)\)", detached.stdout).group(1)
    assert "padnet-dist status" in detached.stdout

    # While the driver holds both runs' leases, a second --detach refuses in one line and submits nothing.
    leases = [Path(sweep_dir, stem, "seed0", "pipeline.lease") for stem in STEMS]
    deadline = time.monotonic() + TIMEOUT_S
    while not all(p.exists() for p in leases):
        assert _job_state(slurm_cluster, driver) in ("PENDING", "RUNNING"), _driver_log(sweep_dir)
        assert time.monotonic() < deadline, "the driver did not take the runs' leases"
        time.sleep(0.5)
    second = subprocess.run([*command, "--detach"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert second.returncode == 2 and "submitted" not in second.stdout, second.stdout + second.stderr
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert "is driven by another sweep or pipeline" in second.stderr and "padnet-dist status" in second.stderr

    while (state := _job_state(slurm_cluster, driver)) in ("PENDING", "RUNNING", "COMPLETING"):
        assert time.monotonic() < deadline, f"the sweep's driver did not end in {TIMEOUT_S:.0f} s"
        time.sleep(1)
    log = _driver_log(sweep_dir)
    assert state == "COMPLETED", log
    assert f"table: {sweep_dir}/table2.md" in log
    states = check_sweep(sweep_dir, "slurm")
    record_dirs = [Path(sweep_dir, stem, "seed0", "pipeline", "slurm-jobs") for stem in STEMS]
    for rec_dir, state in zip(record_dirs, states.values(), strict=True):  # every job an sbatch of this cluster
        for rec in state["jobs"].values():
            assert re.fullmatch(r"\d+", rec["backend_id"]) and (rec_dir / f"{rec['backend_id']}.json").is_file(), rec
    ran_s = time.monotonic() - started

    before = attempts(sweep_dir)
    again = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "submitted" not in again.stdout, again.stdout
    assert attempts(sweep_dir) == before
    print(f"\nslurm sweep: {ran_s:.0f} s to the end of the detached driver; re-run "
          f"{time.monotonic() - started - ran_s:.0f} s", file=sys.stderr)  # fmt: skip


def _driver_log(sweep_dir: str) -> str:
    logs = sorted(Path(sweep_dir, "logs").glob("sweep.*.log"))
    return logs[-1].read_text()[-6000:] if logs else "(no driver log yet)"
