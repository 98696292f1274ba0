"""Ray Train through the Ray Jobs API on a real local Ray head: a killed worker, re-submission, both phases."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from padnet_dist.cli import main as cli_main
from padnet_dist.config import load_config
from padnet_dist.errors import UserError
from padnet_dist.launch import free_port
from padnet_dist.storage import storage_for
from padnet_dist.train import checkpoint as ckpt
from tests.train.tiny_run import REPO, tiny_overrides, write_tiny_shards

RAY = Path(sys.executable).parent / "ray"
HEAD_START_TIMEOUT_S = 120
JOB_TIMEOUT_S = 420


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _session_processes(sid: int) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                found.append(p)
        except (OSError, psutil.Error):
            pass
    return found


def _stop_session(head: subprocess.Popen) -> None:
    """Stop every process of the head's own session, by pid (``ray stop`` would stop every Ray on the host)."""
    procs = _session_processes(head.pid)
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=15)
    if head.poll() is None:
        head.kill()
    head.wait()


@pytest.fixture(scope="module")
def ray_dashboard() -> Iterator[str]:
    """A real Ray head (2 CPUs, dashboard and Jobs API) in its own session; yields the dashboard URL."""
    if not RAY.exists():
        _unavailable(f"{RAY} is missing: pip install 'ray[default]'")
    # Ray's socket paths must stay under ~107 characters: a short temp dir, not pytest's tmp_path
    temp_dir = tempfile.mkdtemp(prefix="pdray-", dir="/tmp")
    dashboard_port = free_port()
    cmd = [
        str(RAY), "start", "--head", "--block", "--num-cpus", "2", "--disable-usage-stats",
        "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
        "--port", str(free_port()), "--ray-client-server-port", str(free_port()),
        "--dashboard-agent-listen-port", str(free_port()), "--temp-dir", temp_dir,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    started = time.monotonic()
    log = open(Path(temp_dir) / "head.log", "wb")  # noqa: SIM115 - closed in teardown
    head = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard_port}"
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/version", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if head.poll() is not None or time.monotonic() - started > HEAD_START_TIMEOUT_S:
                _stop_session(head)
                tail = (Path(temp_dir) / "head.log").read_text(errors="replace")[-2000:]
                _unavailable(f"the Ray head did not start (exit code {head.poll()}): {tail}")
            time.sleep(0.5)
        print(f"\nRay head up in {time.monotonic() - started:.1f} s", file=sys.stderr)
        yield url
    finally:
        _stop_session(head)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _submit(client, *args: str) -> str:
    entrypoint = shlex.join(
        [sys.executable, "-m", "padnet_dist.cli", "ray-train", "--config", str(REPO / "configs/tiny.yaml"), *args]
    )
    env_vars = {
        "OMP_NUM_THREADS": "1",  # 2 workers on 2 shared cores: one intra-op thread each
        "TORCH_EXTENSIONS_DIR": os.environ["TORCH_EXTENSIONS_DIR"],  # the compiled DeepSpeed op (tiny_run sets it)
        "PYTHONUNBUFFERED": "1",
        "RAY_DEDUP_LOGS": "0",  # keep each rank's lines in the job logs
    }
    return client.submit_job(entrypoint=entrypoint, runtime_env={"env_vars": env_vars})


def _wait(client, job_id: str, started: float) -> tuple[dict, str]:
    from ray.job_submission import JobStatus

    while True:
        status = client.get_job_status(job_id)
        if status.is_terminal():
            break
        if time.monotonic() - started > JOB_TIMEOUT_S:
            client.stop_job(job_id)
            pytest.fail(f"job {job_id} still {status} after {JOB_TIMEOUT_S} s:\n{client.get_job_logs(job_id)[-4000:]}")
        time.sleep(1)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-6000:]
    print(f"job {job_id}: {time.monotonic() - started:.1f} s wall", file=sys.stderr)
    return json.loads([line for line in logs.splitlines() if line.startswith("{")][-1]), logs


@pytest.mark.integration
def test_two_phases_as_ray_jobs_with_a_worker_killed(ray_dashboard, tmp_path):
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_dashboard)
    manifest = write_tiny_shards(str(tmp_path / "shards"))
    run_dir = str(tmp_path / "run")
    phase1_dir = ckpt.phase_dir(run_dir, 1)
    st = storage_for(run_dir)

    # Phase 1, 6 steps, a commit every 2; rank 1's worker is killed after the first commit: Ray restarts the
    # worker group (--max-failures 1) and run.resume=auto continues from our newest committed checkpoint.
    overrides = tiny_overrides(manifest, run_dir, "phases.phase1.epochs=5", "run.max_steps=6")
    started = time.monotonic()
    job = _submit(client, *overrides, "run.checkpoint_every_steps=2", "--num-workers", "2", "--max-failures", "1")
    victim = None
    while victim is None:  # the job's logs are read only once a commit exists: reading them costs the head CPU
        time.sleep(0.3)
        assert time.monotonic() - started < JOB_TIMEOUT_S, "no checkpoint was committed in time"
        if ckpt.list_committed(phase1_dir, st):
            pid = re.search(r"rank 1 of 2, .*pid (\d+), phase 1", client.get_job_logs(job))
            victim = int(pid.group(1)) if pid else None
        elif client.get_job_status(job).is_terminal():
            pytest.fail(f"phase 1 ended before its first commit:\n{client.get_job_logs(job)[-6000:]}")
    newest_step_at_kill = ckpt.list_committed(phase1_dir, st)[-1][0]
    os.kill(victim, signal.SIGKILL)
    print(
        f"\nrank 1 killed after the commit of step {newest_step_at_kill}, {time.monotonic() - started:.1f} s",
        file=sys.stderr,
    )
    p1, logs = _wait(client, job, started)

    assert p1["world_size"] == 2 and p1["step"] == 6
    resumed_step = int(re.fullmatch(r".*/step-(\d+)", p1["resumed_from"]).group(1))
    assert newest_step_at_kill <= resumed_step < 6  # nothing commits without rank 1, so nothing newer is lost
    assert ckpt.list_committed(phase1_dir, st)[-1] == (6, p1["checkpoint"])
    names = {p.name for p in Path(p1["checkpoint"]).iterdir()}
    assert {"loader-rank0.json", "loader-rank1.json", "rng-rank0.json", "rng-rank1.json", "model.pt"} <= names
    for rank in (0, 1):
        assert re.search(rf"rank {rank} of 2, .*phase 1", logs), f"rank {rank} is missing from the job logs"
        lines = Path(run_dir, f"phase1/logs/rank{rank}.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in lines] == list(range(1, 7))  # redone steps logged once

    # The same command submitted again continues the run (here to a later max_steps)
    started = time.monotonic()
    more = _wait(client, _submit(client, *overrides, "run.max_steps=8", "--num-workers", "2"), started)[0]
    assert more["resumed_from"] == p1["checkpoint"] and more["step"] == 8

    # Phase 2 starts from phase 1's final checkpoint
    started = time.monotonic()
    p2, logs = _wait(client, _submit(client, *overrides, "phase=2", "run.max_steps=2", "--num-workers", "2"), started)
    assert p2["initialised_from"] == more["checkpoint"] and p2["resumed_from"] is None
    assert ckpt.list_committed(ckpt.phase_dir(run_dir, 2), st)[-1] == (2, p2["checkpoint"])
    assert re.search(r"rank 1 of 2, .*phase 2", logs)


def test_world_from_ray_context_maps_ranks_and_nodes():
    from ray.train.v2.api.context import LocalTrainContext

    from padnet_dist.launch_ray import world_from_ray_context

    context = LocalTrainContext("t", world_size=6, world_rank=5, local_rank=2, local_world_size=3, node_rank=1)
    world = world_from_ray_context(context, environ={"MASTER_ADDR": "10.0.0.7", "MASTER_PORT": "29611"})
    assert (world.rank, world.local_rank, world.world_size, world.node_rank, world.num_nodes) == (5, 2, 6, 1, 2)
    assert (world.master_addr, world.master_port) == ("10.0.0.7", 29611)
    assert not world.is_main


def test_relative_inputs_become_absolute_and_a_relative_run_dir_is_refused(tmp_path):
    from padnet_dist.launch_ray import prepare_config

    (tmp_path / "shards").mkdir()
    (tmp_path / "shards/train.manifest.json").write_text("{}")
    cfg = load_config(
        REPO / "configs/tiny.yaml", [f"run.dir={tmp_path}/run", "data.train_manifest=shards/train.manifest.json"]
    )
    prepared = prepare_config(cfg, cwd=str(tmp_path))
    assert prepared.data.train_manifest == str(tmp_path / "shards/train.manifest.json")
    assert prepared.run.dir == cfg.run.dir
    with pytest.raises(UserError, match="run.dir=runs/x is relative"):
        prepare_config(load_config(REPO / "configs/tiny.yaml", ["run.dir=runs/x"]), cwd=str(tmp_path))


def test_ray_run_record_goes_to_an_s3_compatible_store(s3):
    from padnet_dist.launch_ray import ray_storage

    path, filesystem = ray_storage(s3.url("runs/a/ray"), s3.storage_cfg)
    assert path == f"{s3.bucket}/runs/a/ray"
    with filesystem.open_output_stream(f"{path}/phase1/marker") as out:
        out.write(b"ok")
    assert s3.client().get_object(Bucket=s3.bucket, Key="runs/a/ray/phase1/marker")["Body"].read() == b"ok"


def test_bad_arguments_fail_in_one_line_before_any_cluster_is_contacted(tmp_path, capsys):
    args = ["ray-train", "--config", str(REPO / "configs/tiny.yaml"), f"run.dir={tmp_path}/run"]
    assert cli_main([*args, "--num-workers", "0"]) == 2
    assert capsys.readouterr().err.strip().endswith("--num-workers 0: give at least 1 worker")
    assert cli_main([*args, "engine.device=cuda", "--num-workers", "2"]) == 2
    assert "add --use-gpu" in capsys.readouterr().err
    assert cli_main([*args[:3], "run.dir=runs/rel", "--num-workers", "2"]) == 2
    assert "is relative" in capsys.readouterr().err
