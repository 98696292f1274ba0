"""The local backend: each job is a detached process group on this machine that outlives its coordinator.

``submit`` starts ``python -m padnet_dist.pipeline.local_job JOB_DIR`` in a session of its own (so a terminal's
Ctrl-C reaches only the coordinator) with its output in the job's log. That runner starts
``padnet-dist ARGV`` (``--nproc N`` for training and evaluation: N local ranks), passes a SIGTERM on to it (training
ranks commit and exit 75) and writes the exit code to ``JOB_DIR/exit.json`` before it ends. The backend id is the job
directory's name below ``jobs_dir``, so a coordinator started later, in another process, reads the exit code or finds
the runner still alive and re-attaches to it. A log bound for a bucket is uploaded by the runner, through the run's
``storage`` settings (its endpoint), which the job's record keeps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from padnet_dist.config.run import StorageConfig
from padnet_dist.pipeline.backend import EXIT_INTERRUPTED, JobSpec, JobState, JobStatus
from padnet_dist.storage.local import atomic_write_local
from padnet_dist.storage.url import is_s3, local_path

SPEC_FILE = "spec.json"
STARTED_FILE = "started.json"
EXIT_FILE = "exit.json"
LOCAL_LOG = "output.log"  # the log when the job's log_url is in a bucket (the runner uploads it at the end)
START_GRACE_S = 30.0  # a runner not yet seen alive this long after submit counts as lost


def state_from_exit_code(code: int) -> JobState:
    if code == 0:
        return JobState.SUCCEEDED
    return JobState.INTERRUPTED if code == EXIT_INTERRUPTED else JobState.FAILED


def write_json(path: Path, data: dict) -> None:
    atomic_write_local(str(path), lambda f: f.write(json.dumps(data).encode()))


def process_start_ticks(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None when no such process: with the pid it
    names one process for good, where a pid alone may be reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def job_env(spec: JobSpec, environ: Mapping[str, str]) -> dict[str, str]:
    """A job's environment: this one, ``OMP_NUM_THREADS`` = ``cpus_per_rank`` (the ranks of jobs running side by side,
    a sweep's, must not each spin every core's OpenMP threads), then the spec's own variables."""
    return {**environ, "OMP_NUM_THREADS": str(spec.cpus_per_rank), **spec.env}


class LocalBackend:
    """Jobs as process groups on this machine; their records in ``jobs_dir`` (one directory per job)."""

    name = "local"

    def __init__(self, jobs_dir: str, cwd: str | None = None, storage: StorageConfig | None = None) -> None:
        self.jobs_dir = Path(jobs_dir)
        self.cwd = cwd or os.getcwd()
        self.storage = storage or StorageConfig()  # where a log bound for a bucket is uploaded (its endpoint)

    def submit(self, spec: JobSpec) -> str:
        """The job's id is its ``token`` (or a new unique name), so ``find`` knows it from the token alone."""
        job_id = spec.token or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        job_dir = self.jobs_dir / job_id
        job_dir.mkdir(parents=True, exist_ok=True)  # left empty by a submit that stopped before spec.json
        if (job_dir / SPEC_FILE).exists():
            raise ValueError(f"local job {job_id} was submitted already: a token is submitted once (find it)")
        log = local_path(spec.log_url) if spec.log_url and not is_s3(spec.log_url) else str(job_dir / LOCAL_LOG)
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        argv = list(spec.argv)
        if spec.kind in ("train", "eval"):
            argv += ["--nproc", str(spec.nodes * spec.ranks_per_node)]
        record = {"name": spec.name, "kind": spec.kind, "argv": argv, "log": log, "log_url": spec.log_url,
                  "storage": dataclasses.asdict(self.storage), "submitted_at": time.time()}  # fmt: skip
        write_json(job_dir / SPEC_FILE, record)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "padnet_dist.pipeline.local_job", str(job_dir)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd,
                env=job_env(spec, os.environ), start_new_session=True,
            )  # fmt: skip
        # The runner also writes this; writing it here too means a job is attachable the moment submit returns.
        write_json(job_dir / STARTED_FILE, {"pid": proc.pid, "start_ticks": process_start_ticks(proc.pid),
                                            "started_at": time.time()})  # fmt: skip
        return job_id

    def find(self, token: str) -> str | None:
        # submit writes spec.json before it starts the runner; without it the runner never started
        return token if token and (self.jobs_dir / token / SPEC_FILE).is_file() else None

    def status(self, job_id: str) -> JobStatus:
        job_dir = self.jobs_dir / job_id
        spec = _read(job_dir / SPEC_FILE)
        if spec is None:
            return JobStatus(JobState.UNKNOWN)
        log = spec.get("log_url") or spec["log"]
        ended = _read(job_dir / EXIT_FILE)
        if ended is not None:
            code = int(ended["exit_code"])
            return JobStatus(state_from_exit_code(code), code, ended.get("started_at"), ended.get("ended_at"), log)
        started = _read(job_dir / STARTED_FILE)
        if started is not None and self._alive(started):
            return JobStatus(JobState.RUNNING, started_at=started.get("started_at"), log=log)
        if started is None and time.time() - spec["submitted_at"] < START_GRACE_S:
            return JobStatus(JobState.PENDING, log=log)
        return JobStatus(JobState.UNKNOWN, log=log)  # the runner died without writing its exit code (SIGKILL)

    def stop(self, job_id: str) -> None:
        self._signal(job_id, signal.SIGTERM, group=False)  # the runner passes it on; ranks commit and exit 75

    def cancel(self, job_id: str) -> None:
        self._signal(job_id, signal.SIGKILL, group=True)  # ranks die with their launcher (launch/rank.py)

    def _signal(self, job_id: str, sig: int, *, group: bool) -> None:
        started = _read(self.jobs_dir / job_id / STARTED_FILE)
        if started is None or not self._alive(started):
            return
        try:
            (os.killpg if group else os.kill)(started["pid"], sig)
        except ProcessLookupError:
            pass

    @staticmethod
    def _alive(started: dict) -> bool:
        ticks = process_start_ticks(int(started["pid"]))
        return ticks is not None and ticks == started.get("start_ticks", ticks)


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
