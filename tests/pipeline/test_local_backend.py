"""The local backend with real processes: exit codes and logs survive the coordinator that submitted the job, a
training job asked to stop commits and ends as interrupted (exit 75), and ``--detach`` leaves a coordinator running
in the background that records the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from padnet_dist.pipeline.backend import JobSpec, JobState
from padnet_dist.pipeline.local import LocalBackend, job_env
from padnet_dist.storage import storage_for
from padnet_dist.train import checkpoint as ckpt
from tests.helpers import REPO_ROOT
from tests.helpers.tiny_run import tiny_overrides, write_tiny_shards

pytestmark = pytest.mark.integration
TINY = str(REPO_ROOT / "configs" / "tiny.yaml")


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _wait_done(backend: LocalBackend, job_id: str, timeout_s: float = 600):
    deadline = time.monotonic() + timeout_s
    while not (status := backend.status(job_id)).state.done:
        assert time.monotonic() < deadline, f"job {job_id} still {status.state}"
        time.sleep(0.2)
    return status


def test_a_jobs_exit_code_and_log_are_read_by_a_later_coordinator(tmp_path):
    manifest = write_tiny_shards(str(tmp_path / "shards"), num=4)
    ok = JobSpec(name="data", kind="task", argv=("check-data", "--config", TINY, f"data.train_manifest={manifest}",
                                                 "data.val_manifest=''"), log_url=str(tmp_path / "logs/ok.log"))  # fmt: skip
    bad = JobSpec(name="bad", kind="task", argv=("check-data", "--config", TINY, "data.train_manifest=/nowhere.json"),
                  log_url=str(tmp_path / "logs/bad.log"))  # fmt: skip
    first = LocalBackend(str(tmp_path / "jobs"), cwd=str(REPO_ROOT))
    ids = first.submit(ok), first.submit(bad)
    later = LocalBackend(str(tmp_path / "jobs"))  # another coordinator process knows only the ids
    good, failed = (_wait_done(later, i) for i in ids)
    assert good.state == JobState.SUCCEEDED and good.exit_code == 0 and good.ended_at >= good.started_at
    assert failed.state == JobState.FAILED and failed.exit_code == 2
    assert "data.train_manifest=/nowhere.json does not exist" in Path(failed.log).read_text()
    assert "data: ok" in Path(good.log).read_text()
    assert later.status("no-such-job").state == JobState.UNKNOWN


@pytest.mark.slow
def test_stopping_a_training_job_commits_a_checkpoint_and_ends_it_as_interrupted(tmp_path):
    manifest = write_tiny_shards(str(tmp_path / "shards"))
    run_dir = str(tmp_path / "run")
    argv = ("train", "--config", TINY, *tiny_overrides(manifest, run_dir, "phases.phase1.epochs=50"), "phase=1")
    backend = LocalBackend(str(tmp_path / "jobs"), cwd=str(REPO_ROOT))
    job_id = backend.submit(JobSpec(name="phase1", kind="train", argv=argv, log_url=str(tmp_path / "p1.log"),
                                    ranks_per_node=2))  # fmt: skip
    log = Path(run_dir, "phase1/logs/rank0.jsonl")
    deadline = time.monotonic() + 600
    while not (log.exists() and log.read_text().count("\n") >= 2):
        assert backend.status(job_id).state == JobState.RUNNING, Path(tmp_path / "p1.log").read_text()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    backend.stop(job_id)
    status = _wait_done(backend, job_id)
    assert status.state == JobState.INTERRUPTED and status.exit_code == 75
    phase_dir = ckpt.phase_dir(run_dir, 1)
    steps = [s for s, _ in ckpt.list_committed(phase_dir, storage_for(phase_dir))]
    assert steps and steps[-1] < 50 * 4


def test_detach_returns_at_once_and_the_background_coordinator_records_the_run(tmp_path):
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "padnet_dist.cli", "pipeline", "--config", TINY, "data.train_manifest=/nowhere.json",
            f"run.dir={run_dir}", "pipeline.max_retries=0", "pipeline.poll_every_s=0.2", "--detach"]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert (
        "coordinator submitted (local id coordinator-" in proc.stdout and f"padnet-dist status {run_dir}" in proc.stdout
    )
    job_id = proc.stdout.split("local id ")[1].split(")")[0]
    status = _wait_done(LocalBackend(str(run_dir / "jobs")), job_id, timeout_s=300)
    # the data check fails (no such manifest) and max_retries=0: the coordinator stops, naming the job and its log
    assert status.state == JobState.FAILED and status.exit_code == 1
    state = json.loads((run_dir / "pipeline.json").read_text())
    assert state["jobs"]["data"]["state"] == "failed" and state["jobs"]["data"]["attempts"] == 1
    assert "stopping: job data failed" in Path(status.log).read_text()
    assert not (run_dir / "pipeline.lease").exists()  # released when the coordinator ended
    assert time.monotonic() - started < 300


def test_a_log_bound_for_a_bucket_is_uploaded_through_the_runs_endpoint(s3, tmp_path):
    # No AWS_ENDPOINT_URL in the environment (the fixture removes it): only the run's storage.endpoint_url names
    # the S3-compatible store, and the job's runner, a process of its own, must use it.
    assert "AWS_ENDPOINT_URL" not in os.environ
    log_url = s3.url("run/logs/data.1.log")
    spec = JobSpec(name="data", kind="task", argv=("check-data", "--config", TINY, "data.train_manifest=/nowhere.json"),
                   log_url=log_url)  # fmt: skip
    backend = LocalBackend(str(tmp_path / "jobs"), cwd=str(REPO_ROOT), storage=s3.storage_cfg)
    status = _wait_done(backend, backend.submit(spec), timeout_s=300)
    assert status.state == JobState.FAILED and status.log == log_url
    uploaded = storage_for(log_url, s3.storage_cfg).read_bytes(log_url).decode()
    assert "data.train_manifest=/nowhere.json does not exist" in uploaded and "== exit code 2" in uploaded


def test_a_submission_whose_id_was_never_recorded_is_found_by_its_token(tmp_path):
    spec = JobSpec(name="data", kind="task", argv=("check-data", "--config", TINY, "data.train_manifest=/nowhere.json"),
                   log_url=str(tmp_path / "data.log"), token="data-1-0123abcd")  # fmt: skip
    backend = LocalBackend(str(tmp_path / "jobs"), cwd=str(REPO_ROOT))
    job = backend.submit(spec)
    assert job == "data-1-0123abcd" and LocalBackend(str(tmp_path / "jobs")).find("data-1-0123abcd") == job
    assert backend.find("data-1-ffffffff") is None and backend.find("") is None
    with pytest.raises(ValueError, match="submitted already"):
        backend.submit(spec)  # a token names one submission
    assert _wait_done(backend, job, timeout_s=300).state == JobState.FAILED


def test_a_jobs_ranks_get_cpus_per_rank_threads_whatever_the_coordinators_environment():
    # two 1-rank jobs side by side on 2 cores (a sweep with --parallel 2): each rank left at cores // nproc = 2
    # OpenMP threads oversubscribes the machine
    spec = JobSpec(name="phase1", kind="train", argv=("train",), log_url="", cpus_per_rank=1)
    assert job_env(spec, {"OMP_NUM_THREADS": "8", "PATH": "/bin"}) == {"OMP_NUM_THREADS": "1", "PATH": "/bin"}
    wide = JobSpec(name="phase1", kind="train", argv=("train",), log_url="", cpus_per_rank=3, env={"X": "1"})
    assert job_env(wide, {}) == {"OMP_NUM_THREADS": "3", "X": "1"}
