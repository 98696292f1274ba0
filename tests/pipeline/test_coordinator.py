"""The scheduler loop against a scripted backend (the seam's contract, no processes): what it submits, how it reacts
to each way a job ends, what it records in pipeline.json, and how a second coordinator continues the run.

The scripted backend stands in for where jobs run, not for a component under test: the real local backend runs the
whole pipeline in test_pipeline_local.py; Slurm and Ray are tested by their own suites.
"""

from __future__ import annotations

import json
from pathlib import Path

from padnet_dist.pipeline.backend import JobSpec, JobState, JobStatus
from padnet_dist.pipeline.coordinator import Coordinator
from padnet_dist.pipeline.graph import RunPlan
from padnet_dist.pipeline.state import load_state, new_state
from padnet_dist.storage import storage_for


class ScriptedBackend:
    """Jobs end at once, as ``script[name]`` says per attempt (default ``succeeded``). A training job that succeeds
    commits ``final_step`` (and every ``every`` steps before); an evaluation writes ``metrics.json``."""

    name = "scripted"

    def __init__(self, script: dict[str, list[str]] | None = None, final_step: int = 20, every: int = 10) -> None:
        self.script = script or {}
        self.final_step, self.every = final_step, every
        self.submitted: list[JobSpec] = []
        self.states: dict[str, JobState] = {}
        self.tokens: dict[str, str] = {}

    def submit(self, spec: JobSpec) -> str:
        self.submitted.append(spec)
        attempt = sum(s.name == spec.name for s in self.submitted)
        outcomes = self.script.get(spec.name, [])
        state = JobState(outcomes[attempt - 1] if attempt <= len(outcomes) else "succeeded")
        if spec.kind == "train":
            phase = int(next(a for a in spec.argv if a.startswith("phase=")).split("=")[1])
            run_dir = next((a.split("=", 1)[1] for a in spec.argv if a.startswith("run.dir=")), None)
            last = self.final_step if state == JobState.SUCCEEDED else self.every
            for step in range(self.every, last + 1, self.every):
                ckpt = Path(run_dir) / f"phase{phase}" / "checkpoints" / f"step-{step:09d}"
                ckpt.mkdir(parents=True, exist_ok=True)
                (ckpt / "COMMITTED").write_text(json.dumps({"step": step}))
        if spec.kind == "eval" and state == JobState.SUCCEEDED:
            step = int(spec.argv[2].rsplit("-", 1)[1])
            Path(spec.argv[2], "metrics.json").write_text(json.dumps({"semantic": {"miou": step / 100}}))
        job_id = f"{spec.name}#{attempt}"
        self.states[job_id] = state
        self.tokens[spec.token] = job_id
        return job_id

    def find(self, token: str) -> str | None:
        return self.tokens.get(token)

    def status(self, job_id: str) -> JobStatus:
        state = self.states.get(job_id, JobState.UNKNOWN)
        code = {JobState.SUCCEEDED: 0, JobState.INTERRUPTED: 75, JobState.FAILED: 1}.get(state)
        return JobStatus(state, code, 1.0, 2.0)

    def stop(self, job_id: str) -> None:
        pass

    def cancel(self, job_id: str) -> None:
        pass


def _coordinator(tmp_path, backend, state=None, **plan) -> Coordinator:
    run_dir = str(tmp_path / "run")
    argv = ("--config", "c.yaml", f"run.dir={run_dir}")
    plan = RunPlan(run_dir=run_dir, config_argv=argv, checkpoint_every_steps=10, with_report=False, **plan)
    state = state or new_state(run_dir, backend.name, list(argv))
    return Coordinator(plan, backend, state, storage_for(run_dir), max_retries=1, poll_every_s=0.001)


def _names(backend) -> list[str]:
    return [s.name for s in backend.submitted]


def test_a_run_goes_through_every_job_once_and_records_it(tmp_path):
    backend = ScriptedBackend()
    coordinator = _coordinator(tmp_path, backend, eval_every=1)
    assert coordinator.run() == 0
    assert _names(backend) == [
        "data", "phase1", "eval-phase1-step-000000010", "eval-phase1-step-000000020", "phase2",
        "eval-phase2-step-000000010", "eval-phase2-step-000000020",
    ]  # fmt: skip
    stored = load_state(str(tmp_path / "run"), storage_for(str(tmp_path)))
    assert stored == coordinator.state and stored["version"] == 1
    phase1 = stored["jobs"]["phase1"]
    assert phase1["state"] == "succeeded" and phase1["attempts"] == 1 and phase1["exit_code"] == 0
    assert phase1["checkpoint"].endswith("phase1/checkpoints/step-000000020") and phase1["step"] == 20
    assert phase1["log"].endswith("logs/phase1.1.log") and phase1["backend_id"] == "phase1#1"
    assert stored["jobs"]["eval-phase2-step-000000020"]["metrics"] == {"semantic": {"miou": 0.2}}
    assert stored["best"] == {"metric": "semantic.miou", "value": 0.2, "phase": 1, "step": 20,
                              "checkpoint": phase1["checkpoint"]}  # fmt: skip
    phase2 = backend.submitted[4]
    assert phase2.argv[-1] == f"phases.phase2.init_from={phase1['checkpoint']}"


def test_an_interrupted_job_is_resubmitted_without_using_a_retry(tmp_path):
    backend = ScriptedBackend({"phase1": ["interrupted", "interrupted"]})
    coordinator = _coordinator(tmp_path, backend)
    assert coordinator.run() == 0
    assert _names(backend)[:4] == ["data", "phase1", "phase1", "phase1"]
    rec = coordinator.jobs["phase1"]
    assert rec["attempts"] == 3 and rec["failures"] == 0 and rec["log"].endswith("phase1.3.log")


def test_a_failing_job_is_retried_max_retries_times_then_the_pipeline_stops_naming_it_and_its_log(tmp_path, capsys):
    backend = ScriptedBackend({"phase1": ["failed", "failed", "failed"]})
    coordinator = _coordinator(tmp_path, backend)
    assert coordinator.run() == 1
    assert _names(backend) == ["data", "phase1", "phase1"]  # max_retries=1
    out = capsys.readouterr().out.splitlines()[-1]
    assert "job phase1 failed" in out and "phase1.2.log" in out and "re-run the same command" in out
    # the same command again: the failed job gets a fresh budget and the run completes
    again = _coordinator(tmp_path, backend, state=coordinator.state)
    backend.script["phase1"] = ["failed", "failed", "succeeded"]
    assert again.run() == 0 and again.jobs["phase1"]["attempts"] == 3


def test_an_evaluation_whose_checkpoint_was_pruned_is_skipped_not_failed(tmp_path, capsys):
    backend = ScriptedBackend({"eval-phase1-step-000000010": ["failed"]})
    coordinator = _coordinator(tmp_path, backend, eval_every=1)
    real_submit = backend.submit

    def submit_and_prune(spec):
        job_id = real_submit(spec)
        if spec.name == "eval-phase1-step-000000010":  # the trainer pruned it while the evaluation started
            Path(spec.argv[2], "COMMITTED").unlink()
        return job_id

    backend.submit = submit_and_prune
    assert coordinator.run() == 0
    assert coordinator.jobs["eval-phase1-step-000000010"]["state"] == "skipped"
    assert "pruned before its evaluation ran" in capsys.readouterr().out


def test_a_second_coordinator_reattaches_to_running_jobs_instead_of_submitting_them_again(tmp_path):
    first = ScriptedBackend()
    coordinator = _coordinator(tmp_path, first)
    coordinator.step()  # data submitted, succeeded
    coordinator.step()  # phase1 submitted
    first.states["phase1#1"] = JobState.RUNNING
    coordinator.step()
    assert coordinator.jobs["phase1"]["state"] == "running"
    # the coordinator dies; a new one (another process) loads the stored state while phase 1 still runs
    stored = load_state(str(tmp_path / "run"), storage_for(str(tmp_path)))
    second = ScriptedBackend()
    second.states["phase1#1"] = JobState.RUNNING
    again = _coordinator(tmp_path, second, state=stored)
    again.step()
    assert second.submitted == [] and again.jobs["phase1"]["backend_id"] == "phase1#1"
    second.states["phase1#1"] = JobState.SUCCEEDED  # its checkpoints were committed by the first submission
    assert again.run() == 0
    assert "phase1" not in _names(second) and "data" not in _names(second)


def test_a_job_lost_with_its_coordinator_is_resubmitted(tmp_path):
    backend = ScriptedBackend()
    coordinator = _coordinator(tmp_path, backend)
    coordinator.step()
    coordinator.step()
    backend.states["phase1#1"] = JobState.RUNNING
    coordinator.step()
    backend.states["phase1#1"] = JobState.UNKNOWN  # e.g. the local runner was SIGKILLed with the coordinator
    assert coordinator.run() == 0
    assert coordinator.jobs["phase1"]["attempts"] == 2


class InterruptingBackend(ScriptedBackend):
    """Phase 1 keeps running; the user presses Ctrl-C while the coordinator polls it. ``stop`` makes it commit."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.stopped: list[str] = []

    def submit(self, spec: JobSpec) -> str:
        job_id = super().submit(spec)
        if spec.kind == "train":
            self.states[job_id] = JobState.RUNNING
        return job_id

    def status(self, job_id: str) -> JobStatus:
        if job_id == "phase1#1" and not self.stopped and self.states[job_id] == JobState.RUNNING:
            if getattr(self, "_seen_running", False):
                raise KeyboardInterrupt
            self._seen_running = True
        return super().status(job_id)

    def stop(self, job_id: str) -> None:
        self.stopped.append(job_id)
        self.states[job_id] = JobState.INTERRUPTED


def test_ctrl_c_on_the_local_backend_stops_running_jobs_and_records_them_as_interrupted(tmp_path, capsys):
    backend = InterruptingBackend("local")
    coordinator = _coordinator(tmp_path, backend)
    assert coordinator.run() == 130
    assert backend.stopped == ["phase1#1"]
    assert coordinator.jobs["phase1"]["state"] == "interrupted"
    assert load_state(str(tmp_path / "run"), storage_for(str(tmp_path)))["jobs"]["phase1"]["state"] == "interrupted"
    assert "re-run the same command to continue" in capsys.readouterr().out


def test_ctrl_c_on_a_cluster_backend_leaves_the_jobs_running_and_says_how_to_reattach(tmp_path, capsys):
    backend = InterruptingBackend("slurm")
    coordinator = _coordinator(tmp_path, backend)
    assert coordinator.run() == 130
    assert backend.stopped == [] and coordinator.jobs["phase1"]["state"] == "running"
    out = capsys.readouterr().out
    assert "jobs keep running on slurm: phase1 (phase1#1)" in out and "running the same command again" in out


def _run_coordinator(tmp_path, name: str, backend, **plan) -> Coordinator:
    run_dir = str(tmp_path / name)
    argv = ("--config", "c.yaml", f"run.dir={run_dir}")
    plan = RunPlan(run_dir=run_dir, config_argv=argv, checkpoint_every_steps=10, with_report=False, **plan)
    state = load_state(run_dir, storage_for(run_dir)) or new_state(run_dir, backend.name, list(argv))
    return Coordinator(plan, backend, state, storage_for(run_dir), max_retries=1, poll_every_s=0.001)


def test_a_shared_phase1_waits_for_its_owner_fails_with_it_and_continues_once_it_is_fixed(tmp_path):
    from padnet_dist.pipeline.lease import acquire

    owner_dir = str(tmp_path / "owner")
    owner_backend = ScriptedBackend({"phase1": ["failed", "failed"]})
    assert _run_coordinator(tmp_path, "owner", owner_backend).run() == 1  # its phase 1 failed out

    # nobody drives the owner and its phase 1 failed: the dependant stops at once, saying why in one line
    backend = ScriptedBackend()
    dependant = _run_coordinator(tmp_path, "dependant", backend, phase1_from=owner_dir)
    assert dependant.run() == 1
    assert _names(backend) == []
    recorded = load_state(str(tmp_path / "dependant"), storage_for(str(tmp_path)))["phase1_from"]
    assert recorded["state"] == "failed" and recorded["run_dir"] == owner_dir
    message = dependant.failure_message("phase1")
    assert message == recorded["reason"] and "has its phase1 job failed" in message and "\n" not in message

    # while a coordinator holds the owner's lease its phase 1 may still end: the dependant waits
    lease = acquire(owner_dir, 60.0)
    try:
        dependant = _run_coordinator(tmp_path, "dependant", backend, phase1_from=owner_dir)
        assert dependant.step() is None and dependant.state["phase1_from"]["state"] == "waiting"
    finally:
        lease.release()

    # the owner re-run finishes phase 1: the dependant's phase 2 starts from the owner's final checkpoint
    assert _run_coordinator(tmp_path, "owner", ScriptedBackend()).run() == 0
    dependant = _run_coordinator(tmp_path, "dependant", backend, phase1_from=owner_dir)
    assert dependant.run() == 0
    assert _names(backend) == ["data", "phase2", "eval-phase2-step-000000020"]
    final = f"{owner_dir}/phase1/checkpoints/step-000000020"
    assert backend.submitted[1].argv[-1] == f"phases.phase2.init_from={final}"
    assert dependant.state["phase1_from"] == {"run_dir": owner_dir, "state": "ready", "checkpoint": final,
                                              "reason": None}  # fmt: skip


class Crash(Exception):
    """The coordinator's process dying inside ``submit`` (SIGKILL, a lost node), at one chosen point."""


class CrashingBackend(ScriptedBackend):
    """Dies on the first submission of ``name``: after the backend accepted it (``accepted``) or before."""

    def __init__(self, name: str, accepted: bool) -> None:
        super().__init__()
        self.crash_on, self.accepted = name, accepted

    def submit(self, spec: JobSpec) -> str:
        if spec.name == self.crash_on:
            self.crash_on = ""
            if self.accepted:
                super().submit(spec)
            raise Crash
        return super().submit(spec)


def test_a_coordinator_dying_inside_submit_leaves_a_token_the_next_one_finds_instead_of_submitting_twice(tmp_path):
    backend = CrashingBackend("phase1", accepted=True)
    first = _coordinator(tmp_path, backend)
    try:
        first.run()
    except Crash:
        pass
    state = load_state(str(tmp_path / "run"), storage_for(str(tmp_path)))
    assert state["jobs"]["phase1"]["state"] == "submitting" and state["jobs"]["phase1"]["token"]
    second = _coordinator(tmp_path, backend, state=state)
    assert second.run() == 0
    assert _names(backend).count("phase1") == 1  # the job the backend got is followed, not submitted again
    rec = second.jobs["phase1"]
    assert rec["backend_id"] == "phase1#1" and rec["attempts"] == 1 and rec["state"] == "succeeded"
    assert "token" not in rec


def test_a_submission_the_backend_never_got_is_made_by_the_next_coordinator(tmp_path):
    backend = CrashingBackend("phase1", accepted=False)
    try:
        _coordinator(tmp_path, backend).run()
    except Crash:
        pass
    state = load_state(str(tmp_path / "run"), storage_for(str(tmp_path)))
    token = state["jobs"]["phase1"]["token"]
    second = _coordinator(tmp_path, backend, state=state)
    assert second.run() == 0
    assert _names(backend).count("phase1") == 1 and second.jobs["phase1"]["attempts"] == 1
    assert backend.submitted[_names(backend).index("phase1")].token == token  # submitted under the recorded token
