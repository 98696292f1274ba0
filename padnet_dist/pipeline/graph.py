"""The job graph of a run, as a pure function of what has happened so far.

check data -> phase 1 -> evaluations of phase 1 -> phase 2 -> evaluations of phase 2 -> report. A phase's final
committed checkpoint is always evaluated; with ``eval_every = N > 0`` so is every committed checkpoint whose step is
a multiple of ``N * checkpoint_every_steps``, as soon as it appears, while the phase trains. Phase 2 starts when
every evaluation of phase 1 has ended, from phase 1's final checkpoint or (``phase2_init=best``) its best evaluated
one that is still committed. With ``baseline`` the front end alone (``model.variant=frontend``) is trained and
evaluated the same way as a nested run in ``{run_dir}/baseline``; its jobs are named ``baseline-...``.

With ``phase1_from`` (another run's directory: a sweep's shared phase 1) the run has no phase-1 job or phase-1
evaluation of its own: its phase 2 starts from that run's phase-1 checkpoint (the one that run's own phase 2 uses,
by the same ``phase2_init`` rule) once that run's phase 1 and every evaluation of it have ended. ``Upstream`` is what
the coordinator read of that run; ``upstream_phase1`` and ``upstream_failure`` judge it.

``ready_jobs`` answers "which jobs may be submitted now"; the coordinator calls it after every change it observes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from padnet_dist.pipeline.backend import JobSpec, JobState
from padnet_dist.pipeline.state import FINISHED_STATES, Record
from padnet_dist.storage import join_url

SUCCEEDED = JobState.SUCCEEDED.value
# Metric keys (the last part of section.key) where smaller is better; everything else is higher-is-better.
LOWER_IS_BETTER = frozenset({"rel", "log10", "rms", "mean", "median"})
BASELINE_DIR = "baseline"

Committed = Mapping[str, Sequence[tuple[int, str]]]  # phase job name -> [(step, checkpoint url)], oldest first


@dataclass(frozen=True)
class NewJob:
    """A job to submit and the facts its record keeps: ``phase`` and ``phase_dir`` of a training job; ``phase``,
    ``step`` and ``checkpoint`` of an evaluation."""

    spec: JobSpec
    facts: Mapping[str, object]


@dataclass(frozen=True)
class RunPlan:
    """What the graph needs of the config. ``config_argv``: the ``--config`` files and overrides every job gets."""

    run_dir: str
    config_argv: tuple[str, ...]
    checkpoint_every_steps: int
    eval_every: int = 0
    phase2_init: str = "final"
    best_metric: str = "semantic.miou"
    baseline: bool = False
    nodes: int = 1
    ranks_per_node: int = 1
    gpus_per_rank: int = 0
    cpus_per_rank: int = 1
    eval_ranks: int = 1
    with_report: bool = True
    phase1_from: str = ""  # run dir whose phase 1 this run's phase 2 starts from ("": train phase 1 here)


@dataclass(frozen=True)
class Upstream:
    """The run ``phase1_from`` names, as read now: its ``pipeline.json`` jobs (None: it has none), its phase 1's
    committed checkpoints, and whether a coordinator holds its lease (so that its phase 1 may still end)."""

    run_dir: str
    jobs: Mapping[str, Record] | None
    committed: Sequence[tuple[int, str]]
    driven: bool


@dataclass(frozen=True)
class Track:
    """One trained network: PAD-Net itself (``prefix`` "") or the front-end baseline (``prefix`` "baseline-")."""

    prefix: str
    run_dir: str
    overrides: tuple[str, ...]

    def phase_job(self, phase: int) -> str:
        return f"{self.prefix}phase{phase}"

    def eval_job(self, phase: int, step: int) -> str:
        return f"{self.prefix}eval-phase{phase}-step-{step:09d}"


def tracks(plan: RunPlan) -> list[Track]:
    found = [Track("", plan.run_dir, ())]
    if plan.baseline:
        nested = join_url(plan.run_dir, BASELINE_DIR)
        found.append(Track("baseline-", nested, ("model.variant=frontend", f"run.dir={nested}")))
    return found


def ready_jobs(
    plan: RunPlan, jobs: Mapping[str, Record], committed: Committed, upstream: Upstream | None = None
) -> list[NewJob]:
    """Jobs not yet in ``jobs`` whose inputs are ready. ``committed``: checkpoints seen now, per phase job;
    ``upstream``: the ``phase1_from`` run as seen now (None: not read, so a shared phase 1 is not ready)."""
    if "data" not in jobs:
        return [_task(plan, "data", ("check-data", *plan.config_argv))]
    if jobs["data"]["state"] != SUCCEEDED:
        return []
    specs: list[NewJob] = []
    for track in tracks(plan):
        specs += _track_ready(plan, track, jobs, committed, upstream)
    if plan.with_report and "report" not in jobs and all(_track_done(plan, t, jobs) for t in tracks(plan)):
        specs.append(_task(plan, "report", ("report", plan.run_dir, *plan.config_argv)))
    return specs


def is_complete(plan: RunPlan, jobs: Mapping[str, Record]) -> bool:
    if plan.with_report:
        return jobs.get("report", {}).get("state") == SUCCEEDED
    return "data" in jobs and all(_track_done(plan, t, jobs) for t in tracks(plan))


def eval_due(plan: RunPlan, step: int) -> bool:
    """An intermediate checkpoint at ``step`` is evaluated (the final one always is)."""
    period = plan.eval_every * plan.checkpoint_every_steps
    return period > 0 and step % period == 0


def best_checkpoint(
    jobs: Mapping[str, Record], metric: str, prefix: str = "", phase: int | None = None
) -> Record | None:
    """``{"metric", "value", "phase", "step", "checkpoint"}`` of the best evaluated checkpoint of a track (and phase)."""
    section, _, key = metric.partition(".")
    lower = key in LOWER_IS_BETTER
    best: Record | None = None
    for name, rec in sorted(jobs.items()):
        if rec.get("kind") != "eval" or not name.startswith(f"{prefix}eval-") or rec.get("state") != SUCCEEDED:
            continue
        if phase is not None and rec.get("phase") != phase:
            continue
        value = rec.get("metrics", {}).get(section, {}).get(key)
        if not isinstance(value, (int, float)) or math.isnan(value):
            continue
        if best is None or (value < best["value"] if lower else value > best["value"]):
            best = {"metric": metric, "value": value, "phase": rec["phase"], "step": rec.get("step"),
                    "checkpoint": rec["checkpoint"]}  # fmt: skip
    return best


def upstream_phase1(plan: RunPlan, upstream: Upstream | None) -> str | None:
    """The checkpoint of the ``phase1_from`` run this run's phase 2 starts from, once that run's phase 1 and its
    evaluations have ended; None until then."""
    if upstream is None or upstream.jobs is None:
        return None
    owner = Track("", upstream.run_dir, ())
    if not _evals_done(owner, 1, upstream.jobs):
        return None
    return _phase2_init(plan, owner, upstream.jobs, {owner.phase_job(1): upstream.committed}) or None


def upstream_failure(plan: RunPlan, upstream: Upstream) -> str | None:
    """Why the ``phase1_from`` run's phase 1 will not end without a re-run of it (no coordinator drives it and it is
    not done), in one line; None while it is done or may still end."""
    if upstream.driven or upstream_phase1(plan, upstream) is not None:
        return None
    owner = upstream.run_dir
    if upstream.jobs is None:
        why = "has no pipeline.json"
    else:
        names = [n for n in ("phase1", *sorted(upstream.jobs)) if n == "phase1" or n.startswith("eval-phase1-")]
        stuck = [n for n in names if n in upstream.jobs and upstream.jobs[n].get("state") not in FINISHED_STATES]
        if stuck:
            rec = upstream.jobs[stuck[0]]
            why = f"has its {stuck[0]} job {rec.get('state')} (its log: {rec.get('log')})"
        else:
            why = "has not finished phase 1 and its evaluation"
    return (f"phase 1 comes from {owner}, which {why} and no coordinator drives it: continue that run (re-run the "
            "sweep or its pipeline command), then this one")  # fmt: skip


def _track_ready(
    plan: RunPlan, track: Track, jobs: Mapping[str, Record], committed: Committed, upstream: Upstream | None
) -> list[NewJob]:
    specs: list[NewJob] = []
    shared = bool(plan.phase1_from) and track.prefix == ""
    for phase in (2,) if shared else (1, 2):
        name = track.phase_job(phase)
        rec = jobs.get(name)
        if rec is None:
            if shared:
                init = upstream_phase1(plan, upstream)
                if init is not None:
                    specs.append(_train(plan, track, phase, init))
            elif phase == 1 or _evals_done(track, 1, jobs):
                specs.append(_train(plan, track, phase, _phase2_init(plan, track, jobs, committed)))
            return specs
        finished = rec["state"] == SUCCEEDED
        for step, url in committed.get(name, ()):
            final = finished and url == rec.get("checkpoint")
            if (final or eval_due(plan, step)) and track.eval_job(phase, step) not in jobs:
                specs.append(_eval(plan, track, phase, step, url))
        if not finished:
            return specs
        final_step = rec.get("step")
        if final_step is not None and track.eval_job(phase, final_step) not in jobs:
            if not any(s.spec.name == track.eval_job(phase, final_step) for s in specs):
                specs.append(_eval(plan, track, phase, final_step, rec["checkpoint"]))
    return specs


def _evals_done(track: Track, phase: int, jobs: Mapping[str, Record]) -> bool:
    """The phase succeeded, its final checkpoint was evaluated, and no evaluation of it is still to end."""
    rec = jobs.get(track.phase_job(phase))
    if rec is None or rec["state"] != SUCCEEDED or rec.get("step") is None:
        return False
    if track.eval_job(phase, rec["step"]) not in jobs:
        return False
    prefix = f"{track.prefix}eval-phase{phase}-"
    return all(r["state"] in FINISHED_STATES for n, r in jobs.items() if n.startswith(prefix))


def _track_done(plan: RunPlan, track: Track, jobs: Mapping[str, Record]) -> bool:
    return _evals_done(track, 2, jobs)


def _phase2_init(plan: RunPlan, track: Track, jobs: Mapping[str, Record], committed: Committed) -> str:
    phase1 = jobs.get(track.phase_job(1), {})
    if plan.phase2_init == "best":
        best = best_checkpoint(jobs, plan.best_metric, track.prefix, phase=1)
        alive = {url for _, url in committed.get(track.phase_job(1), ())}
        if best is not None and best["checkpoint"] in alive:
            return best["checkpoint"]
    return phase1.get("checkpoint", "")


def _train(plan: RunPlan, track: Track, phase: int, init_from: str) -> NewJob:
    argv = ("train", *plan.config_argv, *track.overrides, f"phase={phase}")
    if phase == 2 and init_from:
        argv += (f"phases.phase2.init_from={init_from}",)
    spec = JobSpec(
        name=track.phase_job(phase), kind="train", argv=argv, log_url="", nodes=plan.nodes,
        ranks_per_node=plan.ranks_per_node, gpus_per_rank=plan.gpus_per_rank, cpus_per_rank=plan.cpus_per_rank,
    )  # fmt: skip
    return NewJob(spec, {"phase": phase, "phase_dir": join_url(track.run_dir, f"phase{phase}")})


def _eval(plan: RunPlan, track: Track, phase: int, step: int, url: str) -> NewJob:
    argv = ("eval", "--checkpoint", url, *plan.config_argv, *track.overrides)
    spec = JobSpec(
        name=track.eval_job(phase, step), kind="eval", argv=argv, log_url="", ranks_per_node=plan.eval_ranks,
        gpus_per_rank=plan.gpus_per_rank, cpus_per_rank=plan.cpus_per_rank,
    )  # fmt: skip
    return NewJob(spec, {"phase": phase, "step": step, "checkpoint": url})


def _task(plan: RunPlan, name: str, argv: tuple[str, ...]) -> NewJob:
    return NewJob(JobSpec(name=name, kind="task", argv=argv, log_url=""), {})
