"""The Ray backend: each job is a Ray job submitted through the Jobs API (``JobSubmissionClient``).

The entrypoint is ``python -m padnet_dist.cli <argv>`` in the coordinator's directory, uploaded as the job's
``working_dir`` (files in ``.gitignore`` are left out), so relative ``--config`` paths and this checkout's code
reach the cluster as with ``cluster/ray_submit.sh``. ``train`` jobs become ``padnet-dist ray-train ...
--num-workers nodes*ranks_per_node`` (Ray Train places the workers; each restart resumes from the newest committed
checkpoint); ``eval`` jobs run ``padnet-dist eval`` in the entrypoint process (``--nproc`` local ranks when more
than one) holding that many CPUs, so they run beside training only where the cluster has room; ``task`` jobs run
as they are. The backend id is the submission id, ``padnet-<job name>-<random>``.

State from ``get_job_info``: an entrypoint that exits 75 (``ray-train`` after its ranks committed on SIGTERM and
Ray had no restart left) is ``INTERRUPTED``; ``STOPPED`` (``ray job stop``) is ``CANCELLED``. Ray's ``stop_job``
sends SIGTERM to the entrypoint process only and kills it 3 s later (``RAY_JOB_STOP_WAIT_TIME_S`` on the head):
Ray Train workers are not signalled, so a stopped training job does not commit first; resubmitted, it resumes
from its newest committed checkpoint (``run.checkpoint_every_steps``). Logs: ``ray job logs <id>``; once a job has
ended its logs are also copied to the ``JobSpec``'s ``log_url`` (local or ``s3://``) on the first status call.
"""

from __future__ import annotations

import os
import shlex
import uuid
from collections.abc import Mapping
from typing import Any

from padnet_dist.config import Config, StorageConfig
from padnet_dist.errors import UserError
from padnet_dist.pipeline.backend import EXIT_INTERRUPTED, JobSpec, JobState, JobStatus
from padnet_dist.storage import storage_for

DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
# Kept out of the uploaded working directory besides .gitignore'd files: a checkout's history can be large.
WORKING_DIR_EXCLUDES = [".git"]
RAY_STATES = {
    "PENDING": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "SUCCEEDED": JobState.SUCCEEDED,
    "STOPPED": JobState.CANCELLED,
    "FAILED": JobState.FAILED,
}


def make_backend(cfg: Config) -> RayBackend:
    """The pipeline's Ray backend for a run (``padnet_dist.pipeline.backends.backend_for``)."""
    return RayBackend.from_config(cfg)


def entrypoint_argv(spec: JobSpec, python: str = "python") -> list[str]:
    """The Ray job's entrypoint for ``spec``: ``python -m padnet_dist.cli`` and the kind's command."""
    args = list(spec.argv)
    if spec.kind == "train":
        if not args or args[0] != "train":
            raise ValueError(f"JobSpec {spec.name}: a train job's argv starts with 'train', not {args[:1]}")
        num_workers = spec.nodes * spec.ranks_per_node
        args = ["ray-train", *args[1:], "--num-workers", str(num_workers), "--cpus-per-worker", str(spec.cpus_per_rank)]
        if spec.gpus_per_rank:
            args.append("--use-gpu")
    elif spec.kind == "eval":
        if not args or args[0] != "eval":
            raise ValueError(f"JobSpec {spec.name}: an eval job's argv starts with 'eval', not {args[:1]}")
        num_ranks = spec.nodes * spec.ranks_per_node
        if num_ranks > 1:
            args += ["--nproc", str(num_ranks)]
    elif spec.kind != "task":
        raise ValueError(f"JobSpec.kind='{spec.kind}' is not one of train, eval, task")
    return [python, "-m", "padnet_dist.cli", *args]


def job_status_of(info: Any) -> JobState:
    """Our state for a Ray ``JobDetails``/``JobInfo`` (``status``, ``driver_exit_code``)."""
    state = RAY_STATES.get(str(getattr(info.status, "value", info.status)), JobState.UNKNOWN)
    if state == JobState.FAILED and getattr(info, "driver_exit_code", None) == EXIT_INTERRUPTED:
        return JobState.INTERRUPTED
    return state


class RayBackend:
    """Ray jobs on the cluster at ``address``: the dashboard's ``http://HEAD:8265`` (or the GCS's ``HEAD:6379``);
    default ``PADNET_RAY_ADDRESS``, ``RAY_ADDRESS``, then ``http://127.0.0.1:8265``.

    ``working_dir``: uploaded as every job's working directory (default: the current directory). ``python``: the
    interpreter on the cluster's nodes (``RAY_JOB_PYTHON``, else ``python``). ``env``: extra environment of every
    job, below each ``JobSpec.env``. ``storage_cfg``: for copying logs to an ``s3://`` ``log_url``.
    """

    name = "ray"

    def __init__(
        self,
        *,
        address: str = "",
        working_dir: str | None = None,
        python: str = "",
        env: Mapping[str, str] | None = None,
        storage_cfg: StorageConfig | None = None,
    ) -> None:
        # PADNET_RAY_ADDRESS: set in every job this backend submits, so a detached coordinator (itself a Ray job,
        # whose RAY_ADDRESS Ray sets to the cluster's GCS) submits through the same Jobs API address
        self.address = (
            address or os.environ.get("PADNET_RAY_ADDRESS") or os.environ.get("RAY_ADDRESS") or DEFAULT_DASHBOARD
        )
        self.working_dir = os.path.abspath(working_dir or os.getcwd())
        self.python = python or os.environ.get("RAY_JOB_PYTHON") or "python"
        self.env = dict(env or {})
        self._client: Any = None
        self.storage_cfg = storage_cfg
        self._copied: set[str] = set()  # ended jobs whose logs this process has copied to their log_url

    @classmethod
    def from_config(cls, cfg: Config) -> RayBackend:
        return cls(address=cfg.pipeline.ray_address, storage_cfg=cfg.storage)

    @property
    def client(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            try:
                self._client = JobSubmissionClient(self.address)
            except Exception as e:  # noqa: BLE001 - ConnectionError, RpcError, ...: all mean no cluster there
                raise UserError(
                    f"no Ray Jobs API at {self.address} ({str(e).splitlines()[0]}): start a head with "
                    "`ray start --head`, or set pipeline.ray_address / RAY_ADDRESS to http://HEAD:8265"
                ) from None
        return self._client

    def submit(self, spec: JobSpec) -> str:
        submission_id = f"padnet-{spec.token}" if spec.token else f"padnet-{spec.name}-{uuid.uuid4().hex[:8]}"
        env_vars = {"PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0", "PADNET_RAY_ADDRESS": self.address,
                    **self.env, **spec.env}  # fmt: skip
        cpus = spec.nodes * spec.ranks_per_node * spec.cpus_per_rank if spec.kind == "eval" else 0
        self.client.submit_job(
            entrypoint=shlex.join(entrypoint_argv(spec, self.python)),
            submission_id=submission_id,
            runtime_env={"working_dir": self.working_dir, "excludes": WORKING_DIR_EXCLUDES, "env_vars": env_vars},
            metadata={"padnet_job": spec.name, "padnet_kind": spec.kind, "padnet_log_url": spec.log_url},
            entrypoint_num_cpus=cpus,
        )
        return submission_id

    def find(self, token: str) -> str | None:
        """The submission id is ``padnet-{token}``: the job exists if the head knows that id."""
        job_id = f"padnet-{token}"
        return job_id if token and self._info(job_id) is not None else None

    def _info(self, job_id: str) -> Any:
        """The head's ``JobDetails`` of ``job_id``, or None when it does not know the id."""
        try:
            return self.client.get_job_info(job_id)
        except RuntimeError as e:  # the SDK's answer to an id the head does not know (404)
            if "does not exist" in str(e) or "404" in str(e):
                return None
            raise

    def status(self, job_id: str) -> JobStatus:
        info = self._info(job_id)
        if info is None:
            return JobStatus(JobState.UNKNOWN, log=self._log_hint(job_id))
        state = job_status_of(info)
        log = self._log_hint(job_id)
        if state.done:
            log = self._copy_logs(job_id, (info.metadata or {}).get("padnet_log_url", "")) or log
        return JobStatus(
            state,
            exit_code=info.driver_exit_code if state.done else None,
            started_at=info.start_time / 1000.0 if info.start_time else None,
            ended_at=info.end_time / 1000.0 if info.end_time and state.done else None,
            log=log,
        )

    def _log_hint(self, job_id: str) -> str:
        return f"ray job logs --address {self.address} {job_id}"

    def _copy_logs(self, job_id: str, log_url: str) -> str:
        """Write the ended job's logs to ``log_url`` once (atomically, local or s3://); returns it, or "" if not."""
        if not log_url:
            return ""
        if job_id not in self._copied:
            try:
                storage_for(log_url, self.storage_cfg).write_bytes(log_url, self.client.get_job_logs(job_id).encode())
            except Exception as e:  # noqa: BLE001 - the logs stay readable through Ray; say why the copy failed
                print(f"padnet-dist pipeline: logs of Ray job {job_id} not copied to {log_url}: {e}", flush=True)
                return ""
            self._copied.add(job_id)
        return log_url

    def stop(self, job_id: str) -> None:
        """``stop_job``: SIGTERM to the entrypoint, SIGKILL 3 s later; see the module docstring (no commit)."""
        self.client.stop_job(job_id)

    def cancel(self, job_id: str) -> None:
        self.client.stop_job(job_id)
