"""The scheduler loop: submit the jobs the graph makes ready, follow them, resubmit or retry, record every change.

Every transition is written to ``{run.dir}/pipeline.json`` before the loop goes on, so a coordinator killed at any
point is replaced by re-running the same command: finished jobs stay finished, jobs still running on the backend
are re-attached through their stored backend ids, and a job that ended while nobody watched is handled as if seen.

A run with ``pipeline.phase1_from`` (a sweep's shared phase 1) reads that run's ``pipeline.json``, checkpoints and
lease on every pass until its own phase 2 is submitted, and records what it found in its state as ``phase1_from``:
``{"run_dir", "state": waiting | ready | failed, "checkpoint" (the one phase 2 starts from, once ready), "reason"}``.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from padnet_dist.pipeline import state as S
from padnet_dist.pipeline.backend import Backend, JobSpec, JobState
from padnet_dist.pipeline.graph import (
    NewJob,
    RunPlan,
    Upstream,
    best_checkpoint,
    is_complete,
    ready_jobs,
    upstream_failure,
    upstream_phase1,
)
from padnet_dist.pipeline.lease import Lease, LeaseLost, is_free, read_lease
from padnet_dist.storage import join_url
from padnet_dist.train.checkpoint import is_committed, list_committed, newest_committed, phase_dir

SHARED_PHASE1 = "phase1"  # what step() names when a shared phase 1 (pipeline.phase1_from) failed out elsewhere

EXIT_STOPPED = 130  # Ctrl-C: the run is resumable by the same command


def log(message: str) -> None:
    print(f"pipeline: {message}", flush=True)


class Heartbeat:
    """Renews the lease every ``ttl/4`` seconds on a thread; ``check()`` raises ``LeaseLost`` once it was taken."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.lost: LeaseLost | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.lease.ttl_s / 4):
            try:
                self.lease.heartbeat()
            except LeaseLost as e:
                self.lost = e
                return
            except Exception as e:  # a storage hiccup: the next beat retries, well within the TTL
                log(f"lease heartbeat failed ({e}); retrying")

    def check(self) -> None:
        if self.lost is not None:
            raise self.lost

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclasses.dataclass
class Coordinator:
    """Drives ``plan`` on ``backend``; ``state`` is the run's ``pipeline.json`` content, updated in place."""

    plan: RunPlan
    backend: Backend
    state: dict[str, Any]
    storage: Any
    max_retries: int
    poll_every_s: float
    clock: Callable[[], float] = time.time
    storage_cfg: Any = None  # reaches the lease of a phase1_from run on S3
    label: str = ""  # prefixes this run's log lines where one process drives several runs (a sweep)

    def _log(self, message: str) -> None:
        log(f"{self.label}: {message}" if self.label else message)

    @property
    def jobs(self) -> dict[str, S.Record]:
        return self.state["jobs"]

    def save(self) -> None:
        S.save_state(self.state, self.storage)

    def run(self, heartbeat: Heartbeat | None = None) -> int:
        """Until the run is complete (0), a job failed out (1) or Ctrl-C (130, after stopping local jobs)."""
        self.attach()
        try:
            while True:
                if heartbeat is not None:
                    heartbeat.check()
                failed = self.step()
                if failed is not None:
                    self._log(f"stopping: {self.failure_message(failed)}. Fix the cause and re-run the same "
                              "command to continue")  # fmt: skip
                    return 1
                if self.complete:
                    self._log(f"complete: {self.plan.run_dir}")
                    return 0
                time.sleep(self.poll_every_s)
        except KeyboardInterrupt:
            return self.interrupted()

    def attach(self) -> None:
        """Take over the jobs a previous coordinator recorded (once, before the first ``step``)."""
        for name, rec in list(self.jobs.items()):
            if rec["state"] == S.SUBMITTING:
                self._recover_submission(name)
                continue
            self.jobs[name] = S.restarted(rec)
            if rec["state"] in S.ACTIVE_STATES:
                self._log(f"re-attaching to {name} ({self.backend.name} id {rec['backend_id']})")

    @property
    def complete(self) -> bool:
        return is_complete(self.plan, self.jobs)

    def failure_message(self, name: str) -> str:
        """One line on why ``name`` (a job ``step`` returned) stopped the run."""
        if name not in self.jobs:
            return (self.state.get("phase1_from") or {}).get("reason") or f"{name} failed"
        rec = self.jobs[name]
        return (f"job {name} {rec['state']} (exit code {rec.get('exit_code')}) after {rec['attempts']} attempt(s); "
                f"its log: {rec.get('log')}")  # fmt: skip

    def step(self) -> str | None:
        """One pass: observe active jobs, act on ended ones, submit ready ones. The name of a job that failed out
        (``SHARED_PHASE1`` when the ``phase1_from`` run's phase 1 will not end without a re-run of that run)."""
        for name in list(self.jobs):
            rec = self.jobs[name]
            if rec["state"] in S.ACTIVE_STATES:
                status = self.backend.status(rec["backend_id"])
                if status.state.value != rec["state"]:
                    self.jobs[name] = S.observed(rec, status, self.clock())
                    self._log(f"{name}: {rec['state']} -> {status.state.value}"
                              + (f" (exit code {status.exit_code})" if status.state.done else ""))  # fmt: skip
                    self.save()
            rec = self.jobs[name]
            if rec["state"] not in S.ACTIVE_STATES and rec["state"] not in S.FINISHED_STATES:
                if self._ended(name) == "stop":
                    return name
            elif rec["state"] == JobState.SUCCEEDED.value and not rec.get("recorded"):
                self._record_success(name)
        committed = {
            name: list_committed(rec["phase_dir"], self.storage)
            for name, rec in self.jobs.items()
            if rec.get("kind") == "train"
        }
        upstream = None
        if self.plan.phase1_from and "phase2" not in self.jobs:
            upstream = self._read_upstream()
            if self._note_upstream(upstream) == "failed":
                return SHARED_PHASE1
        for new in ready_jobs(self.plan, self.jobs, committed, upstream):
            self.submit(new)
        return None

    def _read_upstream(self) -> Upstream:
        """The ``phase1_from`` run as it is now (its lease is read only while its phase 1 is not done)."""
        owner = self.plan.phase1_from
        state = S.load_state(owner, self.storage)
        jobs = None if state is None else state["jobs"]
        committed = list_committed(phase_dir(owner, 1), self.storage) if jobs and "phase1" in jobs else []
        found = Upstream(owner, jobs, committed, driven=True)
        if upstream_phase1(self.plan, found) is not None:
            return found
        held = read_lease(owner, self.storage_cfg)
        return dataclasses.replace(found, driven=held is not None and not is_free(held, self.clock()))

    def _note_upstream(self, upstream: Upstream) -> str:
        """Record where phase 1 comes from and how it stands in the state (saved on change); that state."""
        checkpoint = upstream_phase1(self.plan, upstream)
        reason = upstream_failure(self.plan, upstream)
        state = "ready" if checkpoint else "failed" if reason else "waiting"
        note = {"run_dir": upstream.run_dir, "state": state, "checkpoint": checkpoint, "reason": reason}
        if self.state.get("phase1_from") != note:
            if state != (self.state.get("phase1_from") or {}).get("state") and state != "failed":  # failed: step says
                what = (
                    f"phase 2 starts from {checkpoint}" if checkpoint else "for its phase 1 and its evaluations to end"
                )
                self._log(f"phase 1 from {upstream.run_dir}: {state} ({what})")
            self.state["phase1_from"] = note
            self.save()
        return state

    def submit(self, new: NewJob, previous: S.Record | None = None) -> None:
        """Record the job as ``submitting`` with a fresh token, hand it to the backend, record its id: a crash between
        the two writes leaves a token that ``attach`` looks up, so the job is never submitted twice."""
        attempt = (previous or {}).get("attempts", 0) + 1
        token = f"{new.spec.name}-{attempt}-{uuid.uuid4().hex[:8]}"
        spec = dataclasses.replace(
            new.spec, log_url=join_url(self.plan.run_dir, "logs", f"{new.spec.name}.{attempt}.log"), token=token
        )
        self.jobs[spec.name] = S.submitting(previous, spec, self.clock(), dict(new.facts))
        self.save()
        self._handed_over(spec, previous, dict(new.facts), self.backend.submit(spec))

    def _handed_over(self, spec: JobSpec, previous: S.Record | None, facts: dict, backend_id: str) -> None:
        self.jobs[spec.name] = S.submitted(previous, spec, backend_id, self.clock(), facts)
        self.save()
        self._log(f"{spec.name}: submitted ({self.backend.name} id {backend_id}), log {spec.log_url}")

    def _recover_submission(self, name: str) -> None:
        """A ``submitting`` record left by a coordinator that stopped inside ``submit``: the job the backend got under
        its token, or the same job submitted now when the backend never got it."""
        rec = self.jobs[name]
        spec = dataclasses.replace(_spec_of(rec, name), log_url=rec["log"], token=rec["token"])
        previous = {k: v for k, v in rec.items() if k not in ("state", "token")}
        previous["attempts"] = rec["attempts"] - 1
        facts = {k: rec[k] for k in ("phase", "phase_dir", "step", "checkpoint") if k in rec}
        found = self.backend.find(rec["token"])
        if found is not None:
            self._log(f"{name}: found the job submitted before the last coordinator stopped ({self.backend.name} "
                      f"id {found})")  # fmt: skip
            self._handed_over(spec, previous, facts, found)
        else:
            self._handed_over(spec, previous, facts, self.backend.submit(spec))

    def _ended(self, name: str) -> str:
        rec = self.jobs[name]
        if rec.get("kind") == "eval" and not is_committed(rec["checkpoint"], self.storage):
            self.jobs[name] = dict(rec, state=S.SKIPPED)
            self.save()
            self._log(f"{name}: skipped, {rec['checkpoint']} was pruned before its evaluation ran")
            return "done"
        action = S.after_end(rec, self.max_retries)
        if action in ("resubmit", "retry"):
            why = (
                "resumes from its checkpoint"
                if action == "resubmit"
                else f"retry {rec['failures']} of {self.max_retries}"
            )
            self._log(f"{name}: {rec['state']}, resubmitting ({why})")
            facts = {k: rec[k] for k in ("phase", "phase_dir", "step", "checkpoint") if k in rec}
            spec = _spec_of(rec, name)
            self.submit(NewJob(spec, facts), previous=rec)
        return action

    def _record_success(self, name: str) -> None:
        rec = dict(self.jobs[name], recorded=True)
        if rec["kind"] == "train":
            url = newest_committed(rec["phase_dir"], self.storage)
            if url is None:  # nothing to evaluate or start phase 2 from: stop rather than wait for ever
                self._log(f"{name} ended with exit code 0 but {rec['phase_dir']} holds no committed checkpoint")
                self.jobs[name] = dict(rec, state=JobState.FAILED.value, failures=self.max_retries + 1)
                self.save()
                return
            rec.update(checkpoint=url, step=int(url.rsplit("step-", 1)[1]))
        elif rec["kind"] == "eval":
            try:
                rec["metrics"] = json.loads(self.storage.read_bytes(join_url(rec["checkpoint"], "metrics.json")))
            except FileNotFoundError:
                rec["metrics"] = {}
        self.jobs[name] = rec
        if rec["kind"] == "eval":
            self.state["best"] = best_checkpoint(self.jobs, self.plan.best_metric)
            if self.state["best"] and self.state["best"]["checkpoint"] == rec["checkpoint"]:
                self._log(
                    f"best so far: {self.plan.best_metric} {self.state['best']['value']:.4f} at {rec['checkpoint']}"
                )
        self.save()

    def interrupted(self) -> int:
        active = [n for n, r in self.jobs.items() if r["state"] in S.ACTIVE_STATES]
        if self.backend.name != "local":
            self.save()
            ids = ", ".join(f"{n} ({self.jobs[n]['backend_id']})" for n in active) or "none"
            self._log(f"interrupted: jobs keep running on {self.backend.name}: {ids}. Re-attach by running the same "
                      f"command again; padnet-dist status {self.plan.run_dir} shows them")  # fmt: skip
            return EXIT_STOPPED
        self._log(f"interrupted: stopping {', '.join(active) or 'no jobs'} (training commits a checkpoint first; "
                  "Ctrl-C again kills them)")  # fmt: skip
        for name in active:
            self.backend.stop(self.jobs[name]["backend_id"])
        kill = False
        while active:
            try:
                time.sleep(0.5)
            except KeyboardInterrupt:
                kill = True
                for name in active:
                    self.backend.cancel(self.jobs[name]["backend_id"])
            for name in list(active):
                status = self.backend.status(self.jobs[name]["backend_id"])
                if status.state.done:
                    self.jobs[name] = S.observed(self.jobs[name], status, self.clock())
                    active.remove(name)
        self.save()
        self._log(f"stopped{' (killed)' if kill else ''}; re-run the same command to continue")
        return EXIT_STOPPED


def _spec_of(rec: S.Record, name: str) -> JobSpec:
    """The job a record was submitted as (its log URL is set per attempt by ``submit``)."""
    fields = {k: rec[k] for k in ("nodes", "ranks_per_node", "gpus_per_rank", "cpus_per_rank") if k in rec}
    return JobSpec(name=name, kind=rec["kind"], argv=tuple(rec["argv"]), log_url="", **fields)
