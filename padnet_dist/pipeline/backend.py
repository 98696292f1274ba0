"""The one seam between the coordinator and where jobs run: ``Backend`` (local processes, Slurm, Ray).

The coordinator knows jobs only as ``JobSpec`` in and a backend id and ``JobStatus`` out; a backend knows nothing of
phases, checkpoints or the pipeline's state. Backend ids are strings the coordinator stores in ``pipeline.json``
so that a later coordinator re-attaches to a job still running rather than submitting it twice. The coordinator
records a job's ``token`` before it submits; a backend keeps the token with the job, so that ``find(token)`` gives
the id of a job whose submission a crashed coordinator never got to record.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

EXIT_INTERRUPTED = 75  # a training job committed a checkpoint and stopped (preemption, time limit, SIGTERM)


class JobState(str, enum.Enum):
    PENDING = "pending"  # accepted by the backend, not running yet (queued, requeued)
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # exit 0
    INTERRUPTED = "interrupted"  # exit 75: resubmit and it resumes from its checkpoint
    FAILED = "failed"  # any other exit, or the backend gave up on it
    CANCELLED = "cancelled"  # cancelled by a user or an admin (scancel, ray job stop)
    UNKNOWN = "unknown"  # the backend no longer knows the id (local job of a dead coordinator, purged record)

    @property
    def done(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING)


@dataclass(frozen=True)
class JobSpec:
    """One job: ``padnet-dist`` arguments, how many ranks, where its log goes.

    ``kind``: ``train`` (ranks of ``padnet-dist train``: exit 75 means committed and interrupted), ``eval`` (ranks of
    ``padnet-dist eval``) or ``task`` (one CPU process: data check, report, a detached coordinator).
    """

    name: str  # unique within a run, e.g. "phase1", "eval-phase1-step-000000120", "report"
    kind: str
    argv: tuple[str, ...]  # after "padnet-dist", e.g. ("train", "--config", "configs/demo.yaml", "phase=1", ...)
    log_url: str  # the job's stdout and stderr, local path or s3:// (backends that cannot write there say where)
    nodes: int = 1
    ranks_per_node: int = 1
    gpus_per_rank: int = 0
    cpus_per_rank: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    token: str = ""  # unique per submission; the backend keeps it with the job for ``find`` ("" = none)


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    exit_code: int | None = None
    started_at: float | None = None  # unix seconds, when the backend knows
    ended_at: float | None = None
    log: str = ""  # where a user reads the job's output (path, URL, or `ray job logs ID`)


class Backend(Protocol):
    name: str

    def submit(self, spec: JobSpec) -> str:
        """Start the job; return its backend id (local: the launcher's pid; slurm: the job id; ray: submission id)."""

    def find(self, token: str) -> str | None:
        """The id of the job submitted with ``JobSpec.token == token``, or None when no such job was submitted."""

    def status(self, job_id: str) -> JobStatus:
        """The job's state now; ``UNKNOWN`` when the backend has no record of it."""

    def stop(self, job_id: str) -> None:
        """Ask the job to commit and end (SIGTERM to its ranks: training jobs exit 75); returns at once."""

    def cancel(self, job_id: str) -> None:
        """End the job now, without a checkpoint."""
