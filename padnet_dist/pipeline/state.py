"""The pipeline's state: ``{run.dir}/pipeline.json``, and the pure transitions of one job's record.

Schema (version 1, docs/contracts.md)::

    {"version": 1, "run_dir": str, "backend": str, "config": [argv after "padnet-dist pipeline"],
     "jobs": {name: {"kind", "state", "backend_id", "attempts", "failures", "started_at", "ended_at",
                     "exit_code", "log", "argv", + "phase"/"checkpoint"/"step"/"metrics" where they apply}},
     "best": {"metric", "value", "phase", "step", "checkpoint"} | null}

A record's ``state`` is a ``JobState`` value, ``skipped`` (an evaluation whose checkpoint was pruned before it
ran) or ``submitting`` (written with the job's ``token`` just before the backend is asked to run it: a coordinator
that finds one asks the backend for the token instead of submitting the job a second time). The file is rewritten
whole and atomically after every transition, so a reader sees the old or the new state.
"""

from __future__ import annotations

import json
from typing import Any

from padnet_dist.pipeline.backend import JobSpec, JobState, JobStatus
from padnet_dist.storage import join_url

STATE_FILE = "pipeline.json"
STATE_VERSION = 1
SKIPPED = "skipped"
SUBMITTING = "submitting"
FINISHED_STATES = (JobState.SUCCEEDED.value, SKIPPED)  # a job in one of these is never run again
ACTIVE_STATES = (JobState.PENDING.value, JobState.RUNNING.value)

Record = dict[str, Any]


def state_url(run_dir: str) -> str:
    return join_url(run_dir, STATE_FILE)


def new_state(run_dir: str, backend: str, config_argv: list[str]) -> dict[str, Any]:
    return {"version": STATE_VERSION, "run_dir": run_dir, "backend": backend, "config": list(config_argv),
            "jobs": {}, "best": None}  # fmt: skip


def load_state(run_dir: str, storage) -> dict[str, Any] | None:
    """The stored state of ``run_dir``, or None when the run has none yet."""
    url = state_url(run_dir)
    if not storage.exists(url):
        return None
    from padnet_dist.errors import UserError

    try:
        state = json.loads(storage.read_bytes(url))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{url} is not valid JSON: restore it or move it away to start the pipeline afresh") from None
    if state.get("version") != STATE_VERSION:
        raise UserError(f"{url} has version {state.get('version')}, this padnet-dist reads {STATE_VERSION}")
    return state


def save_state(state: dict[str, Any], storage) -> None:
    storage.write_bytes(state_url(state["run_dir"]), json.dumps(state, indent=1, sort_keys=True).encode())


def submitted(previous: Record | None, spec: JobSpec, backend_id: str, now: float, extra: Record) -> Record:
    """The record of ``spec`` just handed to the backend as ``backend_id`` (a new attempt of ``previous``)."""
    rec = dict(previous or {"attempts": 0, "failures": 0})
    rec.pop("token", None)
    rec.update(extra)
    rec.update(
        kind=spec.kind, argv=list(spec.argv), state=JobState.PENDING.value, backend_id=backend_id,
        attempts=rec["attempts"] + 1, submitted_at=now, started_at=None, ended_at=None, exit_code=None,
        log=spec.log_url, nodes=spec.nodes, ranks_per_node=spec.ranks_per_node, gpus_per_rank=spec.gpus_per_rank,
        cpus_per_rank=spec.cpus_per_rank,
    )  # fmt: skip
    return rec


def submitting(previous: Record | None, spec: JobSpec, now: float, extra: Record) -> Record:
    """The record of ``spec`` about to be handed to the backend with ``spec.token``: ``submitted`` without an id."""
    rec = submitted(previous, spec, "", now, extra)
    rec.update(state=SUBMITTING, token=spec.token)
    return rec


def observed(rec: Record, status: JobStatus, now: float) -> Record:
    """``rec`` updated with what the backend reports; ``failures`` counts attempts that ended FAILED."""
    rec = dict(rec)
    rec["state"] = status.state.value
    if status.started_at is not None:
        rec["started_at"] = status.started_at
    elif status.state == JobState.RUNNING and rec.get("started_at") is None:
        rec["started_at"] = now
    if status.state.done:
        rec["ended_at"] = status.ended_at or now
        rec["exit_code"] = status.exit_code
        if status.state == JobState.FAILED:
            rec["failures"] = rec.get("failures", 0) + 1
    if status.log:
        rec["log"] = status.log
    return rec


def after_end(rec: Record, max_retries: int) -> str:
    """What to do with a job that ended: ``done``, ``resubmit`` (interrupted, lost: resumes from its checkpoint),
    ``retry`` (failed, retries left) or ``stop`` (failed ``max_retries`` + 1 times, or cancelled by someone)."""
    state = rec["state"]
    if state in FINISHED_STATES:
        return "done"
    if state in (JobState.INTERRUPTED.value, JobState.UNKNOWN.value):
        return "resubmit"
    if state == JobState.FAILED.value and rec.get("failures", 0) <= max_retries:
        return "retry"
    return "stop"


def restarted(rec: Record) -> Record:
    """A record carried into a new coordinator: a job that had stopped the pipeline gets a fresh retry budget (failed
    out) or is resubmitted (cancelled), as the user re-ran the command after looking at it."""
    if rec["state"] == JobState.FAILED.value:
        return dict(rec, failures=0)
    if rec["state"] == JobState.CANCELLED.value:
        return dict(rec, state=JobState.INTERRUPTED.value)
    return rec
