"""The pipeline's Ray backend against the session's real Ray head, through the Jobs API.

The jobs' interpreter is a stand-in (``RayBackend(python=...)``, what ``RAY_JOB_PYTHON`` sets) that prints its
arguments and exits as ``padnet-dist`` would: 0, 75 (ranks committed, no restart left) or an error. What is real is
everything the backend relies on: submission ids, the uploaded working directory, the job's environment, Ray's
job states and driver exit codes, ``stop_job`` and the job logs. Whole pipelines are in ``test_pipeline_ray.py``.
"""

from __future__ import annotations

import time

import pytest

from padnet_dist.errors import UserError
from padnet_dist.pipeline.backend import JobSpec, JobState
from padnet_dist.pipeline.ray import RayBackend, entrypoint_argv

STANDIN = """#!/bin/bash
shift 2  # -m padnet_dist.cli
echo "standin args: $*"
echo "standin working dir: $(cat marker.txt 2>/dev/null || echo missing)"
case "$PADNET_STANDIN" in
  ok) exit 0 ;;
  fail) echo "standin: failing" >&2; exit 3 ;;
  interrupted) exit 75 ;;
  wait) echo "standin: running"; while true; do sleep 0.2; done ;;
esac
"""
TIMEOUT_S = 120


@pytest.fixture
def backend(ray_cluster, tmp_path) -> RayBackend:
    work = tmp_path / "work"
    work.mkdir()
    (work / "marker.txt").write_text("uploaded\n")
    standin = tmp_path / "python-standin"
    standin.write_text(STANDIN)
    standin.chmod(0o755)
    return RayBackend(address=ray_cluster.dashboard, working_dir=str(work), python=str(standin))


def _spec(name: str, behaviour: str, log_url: str = "", kind: str = "task", argv=("report", "/runs/r1")) -> JobSpec:
    return JobSpec(name=name, kind=kind, argv=argv, log_url=log_url, env={"PADNET_STANDIN": behaviour})


def _wait_done(backend: RayBackend, job_id: str, timeout_s: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while not (status := backend.status(job_id)).state.done:
        if time.monotonic() > deadline:
            backend.cancel(job_id)
            pytest.fail(f"Ray job {job_id} not done in {timeout_s} s: {status}")
        time.sleep(0.5)
    return status


@pytest.mark.integration
def test_jobs_end_with_their_exit_code_and_their_logs_are_copied(backend, tmp_path):
    log = tmp_path / "logs" / "report.log"
    ok = backend.submit(_spec("report", "ok", log_url=str(log)))
    interrupted = backend.submit(_spec("phase1", "interrupted"))
    failed = backend.submit(_spec("data", "fail", argv=("check-data", "--config", "c.yaml")))
    assert ok.startswith("padnet-report-") and ok != backend.submit(_spec("report", "ok"))  # ids never repeat

    done = _wait_done(backend, ok)
    assert (done.state, done.exit_code) == (JobState.SUCCEEDED, 0), done
    assert done.started_at and done.ended_at and done.started_at <= done.ended_at <= time.time() + 1
    assert done.log == str(log)  # copied there once the job ended
    text = log.read_text()
    assert "standin args: report /runs/r1" in text and "standin working dir: uploaded" in text, text

    end = _wait_done(backend, interrupted)
    assert (end.state, end.exit_code) == (JobState.INTERRUPTED, 75), end  # resubmit: it resumes
    assert end.log.startswith("ray job logs --address http://") and end.log.endswith(interrupted)
    end = _wait_done(backend, failed)
    assert (end.state, end.exit_code) == (JobState.FAILED, 3), end

    # a later coordinator knows the jobs by id alone, and an id the head never saw is unknown
    again = RayBackend(address=backend.address)
    assert again.status(ok).state == JobState.SUCCEEDED
    assert again.status("padnet-nothing-00000000").state == JobState.UNKNOWN


@pytest.mark.integration
def test_a_stopped_job_is_cancelled(backend):
    job = backend.submit(_spec("eval-phase1-step-000000004", "wait"))
    deadline = time.monotonic() + TIMEOUT_S
    while backend.status(job).state != JobState.RUNNING:
        assert time.monotonic() < deadline, backend.status(job)
        time.sleep(0.3)
    backend.stop(job)
    assert _wait_done(backend, job).state == JobState.CANCELLED


def test_entrypoints_per_kind():
    train = JobSpec(name="phase1", kind="train", argv=("train", "--config", "c.yaml", "phase=1"), log_url="",
                    nodes=2, ranks_per_node=4, gpus_per_rank=1, cpus_per_rank=8)  # fmt: skip
    assert entrypoint_argv(train) == [
        "python", "-m", "padnet_dist.cli", "ray-train", "--config", "c.yaml", "phase=1",
        "--num-workers", "8", "--cpus-per-worker", "8", "--use-gpu",
    ]  # fmt: skip
    ev = JobSpec(name="e", kind="eval", argv=("eval", "--checkpoint", "s3://b/c"), log_url="", ranks_per_node=2)
    assert entrypoint_argv(ev)[3:] == ["eval", "--checkpoint", "s3://b/c", "--nproc", "2"]
    task = JobSpec(name="report", kind="task", argv=("report", "s3://b/r"), log_url="")
    assert entrypoint_argv(task, "/opt/py/bin/python") == ["/opt/py/bin/python", "-m", "padnet_dist.cli", "report",
                                                           "s3://b/r"]  # fmt: skip
    with pytest.raises(ValueError, match="argv starts with 'train'"):
        entrypoint_argv(JobSpec(name="p", kind="train", argv=("eval",), log_url=""))


def test_no_cluster_at_the_address_is_one_line_naming_the_fix(tmp_path):
    backend = RayBackend(address="http://127.0.0.1:9", working_dir=str(tmp_path))
    with pytest.raises(UserError, match=r"no Ray Jobs API at http://127.0.0.1:9 .*set pipeline.ray_address"):
        backend.status("padnet-x-00000000")


@pytest.mark.integration
def test_a_submission_whose_id_was_never_recorded_is_found_by_its_token(backend):
    spec = JobSpec(name="report", kind="task", argv=("report", "/runs/r1"), log_url="", token="report-1-0123abcd",
                   env={"PADNET_STANDIN": "ok"})  # fmt: skip
    job = backend.submit(spec)
    assert backend.find("report-1-0123abcd") == job  # the submission id is made from the token
    assert backend.find("report-1-ffffffff") is None and backend.find("") is None
    assert _wait_done(backend, job).state == JobState.SUCCEEDED
    assert backend.find("report-1-0123abcd") == job  # and stays known after the job ended
