"""``padnet-dist sweep --backend ray --detach`` on the session's real Ray cluster (a head and a worker node, 1 CPU
each).

``--detach`` submits the sweep's driver as a Ray job and returns; from inside it (this checkout uploaded as its
working directory) the driver submits every job of both rows through the Jobs API, the rows at once (training as
``ray-train`` with one Ray Train worker per row, so both rows' phase 1 fit the cluster's two CPUs together). The sweep
dir is given relative to the checkout, as a user would type it: the sweep makes it absolute, since Ray jobs (the
driver included) run in an uploaded copy of the directory. The test follows the driver's Ray job to its end, checks
the runs and the tables, and re-runs the same command in the foreground: it submits nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from padnet_dist.pipeline.backend import JobState
from padnet_dist.pipeline.ray import RayBackend
from tests.helpers import REPO_ROOT
from tests.helpers.tiny_run import write_tiny_shards
from tests.helpers.tiny_sweep import attempts, check_sweep, sweep_command

pytestmark = pytest.mark.integration

PADNET = str(Path(sys.executable).parent / "padnet-dist")
TIMEOUT_S = 900


def test_detached_sweep_runs_both_rows_as_ray_jobs_at_once(ray_cluster, tmp_path):
    train = write_tiny_shards(str(tmp_path / "shards"), num=8)
    val = write_tiny_shards(str(tmp_path / "shards"), num=4, split="val")
    sweep_dir = tmp_path / "sweep"
    relative = os.path.relpath(sweep_dir, REPO_ROOT)
    command = [PADNET, *sweep_command(train, val, relative, "ray", f"pipeline.ray_address={ray_cluster.dashboard}")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    started = time.monotonic()

    detached = subprocess.run([*command, "--detach"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
    assert detached.returncode == 0, detached.stdout + detached.stderr
    driver = re.search(r"driver submitted \(ray id (padnet-sweep-[0-9a-f]+)\)", detached.stdout).group(1)
    backend = RayBackend(address=ray_cluster.dashboard)
    while not (status := backend.status(driver)).state.done:
        assert time.monotonic() - started < TIMEOUT_S, f"the sweep's driver did not end in {TIMEOUT_S} s"
        time.sleep(1)
    log = backend.client.get_job_logs(driver)
    assert status.state == JobState.SUCCEEDED, log[-6000:]
    assert f"table: {sweep_dir}/table2.md" in log
    assert Path(status.log).is_relative_to(sweep_dir / "logs") and Path(status.log).is_file(), status  # copied
    ran_s = time.monotonic() - started
    states = check_sweep(str(sweep_dir), "ray")
    for state in states.values():  # every job was a Ray job the head knows as succeeded
        for name, rec in state["jobs"].items():
            assert rec["backend_id"].startswith(f"padnet-{name}-"), rec
            assert backend.status(rec["backend_id"]).state == JobState.SUCCEEDED, rec

    before = attempts(str(sweep_dir))
    again = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "submitted" not in again.stdout, again.stdout
    assert attempts(str(sweep_dir)) == before
    rerun_s = time.monotonic() - started - ran_s
    print(f"\nray sweep: {ran_s:.0f} s to the end of the detached driver; re-run {rerun_s:.0f} s", file=sys.stderr)
