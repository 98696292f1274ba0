"""The pipeline's Slurm backend against the real two-node local cluster: the very scripts in ``slurm/`` submitted
with ``sbatch``, their state read back as the coordinator sees it.

The jobs run a stand-in ``padnet-dist`` (a shell script first on PATH) that exits as a training rank would: 0,
75 after SIGTERM (a committed checkpoint) or an error. What is real is everything the backend relies on: sbatch
and its options, the scripts' requeue on exit 75, scontrol's view of a requeued job, scancel's signal path, and
the exit record the scripts write. Whole pipelines with real training are in ``test_pipeline_slurm.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from padnet_dist.errors import UserError
from padnet_dist.pipeline.backend import JobSpec, JobState
from padnet_dist.pipeline.slurm import SlurmBackend, job_state, record_dir_for
from tests.helpers import REPO_ROOT

# The stand-in of `padnet-dist`: prints its arguments, then behaves as PADNET_STANDIN says (per job, via
# JobSpec.env): "ok" exits 0; "fail" exits 3; "term" waits for SIGTERM, then exits 75 (a rank that committed);
# "always75" exits 75 at once, as every run of an interrupted job would.
STANDIN = """#!/bin/bash
echo "standin args: $*"
echo "standin env: PHASE=${PHASE:-unset} NTASKS=${SLURM_NTASKS:-unset} OUTER=${SLURM_OUTER:-unset}"
case "$PADNET_STANDIN" in
  ok) exit 0 ;;
  fail) echo "standin: failing" >&2; exit 3 ;;
  always75) exit 75 ;;
  term) trap 'echo "standin: SIGTERM, committing"; exit 75' TERM
        echo "standin: training"; while true; do sleep 0.2; done ;;
esac
"""
TIMEOUT_S = 120


@pytest.fixture
def backend(slurm_cluster, tmp_path) -> SlurmBackend:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "padnet-dist").write_text(STANDIN)
    (bin_dir / "padnet-dist").chmod(0o755)
    environ = slurm_cluster.env()
    environ["PATH"] = f"{bin_dir}{os.pathsep}{environ['PATH']}"
    environ["PADNET_VENV"] = str(tmp_path / "no-venv")  # the scripts must not put the real padnet-dist first
    # what a detached coordinator inside a Slurm job has in its environment: none of it may reach its jobs
    environ.update(PHASE="2", SLURM_NTASKS="99", SLURM_OUTER="outer-job", SBATCH_PARTITION="nonexistent")
    return SlurmBackend(record_dir=str(tmp_path / "records"), submit_dir=str(REPO_ROOT), environ=environ)


def _spec(name: str, kind: str, argv: tuple[str, ...], behaviour: str, log_url: str = "", **kw) -> JobSpec:
    env = {"PADNET_STANDIN": behaviour, **kw.pop("env", {})}
    return JobSpec(name=name, kind=kind, argv=argv, log_url=log_url, env=env, **kw)


def _wait(backend: SlurmBackend, job_id: str, until, what: str, timeout_s: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while not until(status := backend.status(job_id)):
        if time.monotonic() > deadline:
            backend.cancel(job_id)
            pytest.fail(f"job {job_id}: no {what} in {timeout_s} s: {status}")
        time.sleep(0.3)
    return status


def _scontrol(cluster, job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], env=cluster.env(), capture_output=True,
                         text=True).stdout  # fmt: skip
    return dict(re.findall(r"(\w+)=(\S*)", out))


@pytest.mark.integration
def test_train_job_sized_from_the_spec_requeues_on_75_then_ends_interrupted(backend, slurm_cluster, tmp_path):
    log = tmp_path / "logs" / "phase1.log"
    spec = _spec(
        "phase1", "train", ("train", "--config", "configs/tiny.yaml", "phase=1"), "always75", log_url=str(log),
        nodes=2, ranks_per_node=1, env={"PADNET_MAX_REQUEUES": "1"},
    )  # fmt: skip
    job_id = backend.submit(spec)
    assert job_id.isdigit()
    job = _scontrol(slurm_cluster, job_id)
    assert (job["JobName"], job["NumNodes"].split("-")[0], job["NumTasks"]) == ("padnet-phase1", "2", "2"), job
    # the script requeues the job itself (same id): the backend sees it pending again, not ended
    requeued = _wait(backend, job_id, lambda s: _scontrol(slurm_cluster, job_id).get("Restarts") == "1", "requeue")
    assert requeued.state in (JobState.PENDING, JobState.RUNNING), requeued
    # past PADNET_MAX_REQUEUES it ends with 75: interrupted (resubmit to resume), not failed
    end = _wait(backend, job_id, lambda s: s.state.done, "end")
    assert (end.state, end.exit_code) == (JobState.INTERRUPTED, 75), end
    assert end.started_at and end.ended_at and end.started_at <= end.ended_at <= time.time() + 1
    assert end.log == str(log)
    text = log.read_text()  # both runs, appended; srun ran the stand-in once per rank
    assert text.count("standin args: train --config configs/tiny.yaml phase=1") == 4, text
    assert "requeueing job" in text and "PADNET_MAX_REQUEUES=1): not requeueing" in text
    # neither the coordinator's PHASE nor its enclosing job's variables reached the job
    assert "PHASE=unset" in text and "OUTER=unset" in text and "NTASKS=2" in text, text


@pytest.mark.integration
def test_tasks_succeed_or_fail_with_their_exit_code_and_log(backend, tmp_path):
    ok = backend.submit(_spec("report", "task", ("report", "/runs/r1"), "ok"))
    bad = backend.submit(_spec("data", "task", ("check-data", "--config", "c.yaml"), "fail"))
    done = _wait(backend, ok, lambda s: s.state.done, "end")
    assert (done.state, done.exit_code) == (JobState.SUCCEEDED, 0), done
    # no log_url: the output file is beside the backend's records, named by the job id
    assert done.log == str(tmp_path / "records" / f"report-{ok}.out")
    assert "standin args: report /runs/r1" in Path(done.log).read_text()
    failed = _wait(backend, bad, lambda s: s.state.done, "end")
    assert (failed.state, failed.exit_code) == (JobState.FAILED, 3), failed
    assert "standin: failing" in Path(failed.log).read_text()

    # once slurmctld has forgotten a job (MinJobAge) and without sacct, the script's own exit record answers
    records = tmp_path / "records"
    assert json.loads((records / f"{bad}.exit.json").read_text())["exit_code"] == 3
    forgotten = "987654"
    (records / f"{forgotten}.exit.json").write_text((records / f"{bad}.exit.json").read_text())
    assert backend.status(forgotten).state == JobState.FAILED
    assert backend.status("987655").state == JobState.UNKNOWN


@pytest.mark.integration
def test_stop_makes_ranks_commit_and_cancel_ends_the_job(backend, slurm_cluster, tmp_path):
    log = tmp_path / "p.log"
    spec = _spec("phase2", "train", ("train", "phase=2"), "term", log_url=str(log), env={"PADNET_MAX_REQUEUES": "0"})
    stopped = backend.submit(spec)
    _wait(backend, stopped, lambda s: log.exists() and "standin: training" in log.read_text(), "training")
    backend.stop(stopped)
    end = _wait(backend, stopped, lambda s: s.state.done, "end after stop")
    assert (end.state, end.exit_code) == (JobState.INTERRUPTED, 75), f"{end}\n{log.read_text()}"
    assert "standin: SIGTERM, committing" in log.read_text()

    # a task (a detached coordinator) runs in the batch step itself: the signal must reach it there too
    task_log = tmp_path / "coordinator.log"
    task = backend.submit(_spec("coordinator", "task", ("pipeline", "--no-detach"), "term", log_url=str(task_log)))
    _wait(backend, task, lambda s: task_log.exists() and "standin: training" in task_log.read_text(), "start")
    backend.stop(task)
    end = _wait(backend, task, lambda s: s.state.done, "end of the task after stop")
    assert (end.state, end.exit_code) == (JobState.INTERRUPTED, 75), f"{end}\n{task_log.read_text()}"

    cancelled = backend.submit(_spec("eval-phase2-step-000000004", "eval", ("eval", "--checkpoint", "x"), "term"))
    _wait(backend, cancelled, lambda s: s.state == JobState.RUNNING, "start")
    backend.cancel(cancelled)
    assert _wait(backend, cancelled, lambda s: s.state.done, "end after cancel").state == JobState.CANCELLED


def test_sbatch_command_runs_the_kinds_script_sized_from_the_spec(tmp_path):
    backend = SlurmBackend(
        record_dir=str(tmp_path / "rec"), slurm_args=["--partition=gpu", "--time=2:00:00"], submit_dir=str(tmp_path)
    )
    train = JobSpec(name="phase1", kind="train", argv=("train", "--config", "c.yaml", "phase=1"), log_url="logs/p1.log",
                    nodes=4, ranks_per_node=8, gpus_per_rank=1, cpus_per_rank=6)  # fmt: skip
    cmd = backend.sbatch_command(train)
    assert cmd[:2] == ["sbatch", "--parsable"]
    assert cmd[-4:] == [str(REPO_ROOT / "slurm/train.sh"), "--config", "c.yaml", "phase=1"]
    for option in ("--nodes=4", "--ntasks-per-node=8", "--gpus-per-node=8", "--cpus-per-task=6",
                   f"--output={tmp_path}/logs/p1.log", "--job-name=padnet-phase1"):  # fmt: skip
        assert option in cmd
    # the config's slurm_args come after the sizes, so they win
    assert cmd.index("--partition=gpu") > cmd.index("--cpus-per-task=6")
    task = JobSpec(name="pipeline", kind="task", argv=("pipeline", "--config", "c.yaml"), log_url="s3://b/logs/p.log")
    cmd = backend.sbatch_command(task)
    assert cmd[cmd.index(str(REPO_ROOT / "slurm/task.sh")) + 1 :] == ["pipeline", "--config", "c.yaml"]
    assert f"--output={tmp_path}/rec/pipeline-%j.out" in cmd  # sbatch cannot write to s3://
    with pytest.raises(ValueError, match="argv starts with 'eval'"):
        backend.sbatch_command(JobSpec(name="e", kind="eval", argv=("train",), log_url=""))


def test_slurm_states_map_to_the_coordinators():
    assert job_state("PENDING", None) == JobState.PENDING
    assert job_state("REQUEUED", None) == JobState.PENDING
    assert job_state("COMPLETING", None) == JobState.RUNNING
    assert job_state("COMPLETED", 0) == JobState.SUCCEEDED
    assert job_state("FAILED", 75) == JobState.INTERRUPTED  # the requeue cap reached: committed, resubmit
    assert job_state("FAILED", 1) == JobState.FAILED
    assert job_state("TIMEOUT", 143) == JobState.INTERRUPTED
    assert job_state("PREEMPTED", 0) == JobState.INTERRUPTED
    assert job_state("CANCELLED by 0", 143) == JobState.CANCELLED  # sacct's spelling
    assert job_state("NODE_FAIL", 1) == JobState.FAILED
    assert record_dir_for("/runs/r1", "/home/u/padnet") == "/runs/r1/pipeline/slurm-jobs"
    assert record_dir_for("s3://b/runs/r1", "/home/u/padnet") == "/home/u/padnet/.padnet-slurm-jobs"


def test_missing_sbatch_is_one_line_naming_the_fix(tmp_path):
    backend = SlurmBackend(record_dir=str(tmp_path), environ={"PATH": str(tmp_path)})
    with pytest.raises(UserError, match="sbatch not found: --backend slurm runs Slurm's client commands"):
        backend.submit(JobSpec(name="data", kind="task", argv=("check-data",), log_url=""))


@pytest.mark.integration
def test_a_submission_whose_id_was_never_recorded_is_found_by_its_token(backend, tmp_path):
    """What a coordinator killed right after ``sbatch`` leaves: a job on Slurm and no record of its id."""
    job = backend.submit(_spec("phase1", "task", ("check-data",), "ok", token="phase1-1-0123abcd"))
    (tmp_path / "records" / f"{job}.json").unlink()  # the backend's own record of the id, lost with it
    assert backend.find("phase1-1-0123abcd") == job  # from its comment, while slurmctld knows the job
    assert backend.find("phase1-1-ffffffff") is None and backend.find("") is None
    _wait(backend, job, lambda s: s.state.done, "end")
    # once slurmctld has forgotten it (MinJobAge), the exit record the script wrote carries the token
    record = json.loads((tmp_path / "records" / f"{job}.exit.json").read_text())
    assert record["token"] == "phase1-1-0123abcd"
    forgotten = tmp_path / "records" / "987654.exit.json"  # a job slurmctld no longer lists
    forgotten.write_text(json.dumps({**record, "token": "report-2-89abcdef"}))
    assert backend.find("report-2-89abcdef") == "987654"
