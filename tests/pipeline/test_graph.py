"""The job graph: which jobs a run may start, given what has happened (pure, no processes)."""

from __future__ import annotations

import pytest

from padnet_dist.pipeline.graph import (
    RunPlan,
    Upstream,
    best_checkpoint,
    is_complete,
    ready_jobs,
    upstream_failure,
    upstream_phase1,
)

RUN = "/runs/r"


def _plan(**kw) -> RunPlan:
    return RunPlan(**{"run_dir": RUN, "config_argv": ("--config", "c.yaml", "a=1"), "checkpoint_every_steps": 10} | kw)


def _ckpt(phase: int, step: int, run: str = RUN) -> str:
    return f"{run}/phase{phase}/checkpoints/step-{step:09d}"


def _done(**extra) -> dict:
    return {"state": "succeeded", **extra}


def _names(specs) -> list[str]:
    return [s.spec.name for s in specs]


def _phase_done(phase: int, step: int, run: str = RUN) -> dict:
    return _done(kind="train", phase=phase, step=step, checkpoint=_ckpt(phase, step, run))


def _eval_done(phase: int, step: int, metrics: dict | None = None, run: str = RUN) -> dict:
    return _done(kind="eval", phase=phase, step=step, checkpoint=_ckpt(phase, step, run), metrics=metrics or {})


def test_a_new_run_checks_its_data_first_and_nothing_else():
    assert _names(ready_jobs(_plan(), {}, {})) == ["data"]
    assert ready_jobs(_plan(), {"data": {"state": "running"}}, {}) == []
    (data,) = ready_jobs(_plan(), {}, {})
    assert data.spec.argv == ("check-data", "--config", "c.yaml", "a=1") and data.spec.kind == "task"


def test_phase1_follows_the_data_check_with_the_config_and_phase_and_the_training_size():
    plan = _plan(nodes=2, ranks_per_node=4, gpus_per_rank=1)
    (phase1,) = ready_jobs(plan, {"data": _done()}, {})
    assert phase1.spec.name == "phase1" and phase1.spec.kind == "train"
    assert phase1.spec.argv == ("train", "--config", "c.yaml", "a=1", "phase=1")
    assert (phase1.spec.nodes, phase1.spec.ranks_per_node, phase1.spec.gpus_per_rank) == (2, 4, 1)
    assert phase1.facts == {"phase": 1, "phase_dir": f"{RUN}/phase1"}


def test_intermediate_checkpoints_are_evaluated_every_eval_every_while_training():
    jobs = {"data": _done(), "phase1": {"state": "running", "kind": "train"}}
    committed = {"phase1": [(s, _ckpt(1, s)) for s in (10, 20, 30, 40)]}
    assert _names(ready_jobs(_plan(eval_every=0), jobs, committed)) == []
    assert _names(ready_jobs(_plan(eval_every=2), jobs, committed)) == [
        "eval-phase1-step-000000020", "eval-phase1-step-000000040",
    ]  # fmt: skip
    evals = ready_jobs(_plan(eval_every=1), jobs, committed)
    assert len(evals) == 4 and evals[0].spec.argv[:3] == ("eval", "--checkpoint", _ckpt(1, 10))
    assert evals[0].facts == {"phase": 1, "step": 10, "checkpoint": _ckpt(1, 10)}
    # one already submitted is not submitted again
    jobs["eval-phase1-step-000000010"] = {"state": "running", "kind": "eval"}
    assert "eval-phase1-step-000000010" not in _names(ready_jobs(_plan(eval_every=1), jobs, committed))


def test_phase2_waits_for_every_evaluation_of_phase1_then_starts_from_its_final_checkpoint():
    jobs = {"data": _done(), "phase1": _phase_done(1, 35)}
    committed = {"phase1": [(20, _ckpt(1, 20)), (30, _ckpt(1, 30)), (35, _ckpt(1, 35))]}
    plan = _plan(eval_every=3)
    assert _names(ready_jobs(plan, jobs, committed)) == ["eval-phase1-step-000000030", "eval-phase1-step-000000035"]
    jobs["eval-phase1-step-000000030"] = {"state": "running", "kind": "eval"}
    jobs["eval-phase1-step-000000035"] = _eval_done(1, 35)
    assert ready_jobs(plan, jobs, committed) == []  # an evaluation of phase 1 still runs
    jobs["eval-phase1-step-000000030"] = {"state": "skipped", "kind": "eval"}  # pruned before it ran
    (phase2,) = ready_jobs(plan, jobs, committed)
    assert phase2.spec.name == "phase2"
    assert phase2.spec.argv[-2:] == ("phase=2", f"phases.phase2.init_from={_ckpt(1, 35)}")


def test_the_final_checkpoint_is_evaluated_even_when_the_listing_missed_it():
    jobs = {"data": _done(), "phase1": _phase_done(1, 35)}
    assert _names(ready_jobs(_plan(), jobs, {"phase1": []})) == ["eval-phase1-step-000000035"]


def test_phase2_init_best_takes_the_best_phase1_checkpoint_still_committed_else_the_final_one():
    miou = {20: 0.5, 30: 0.7, 35: 0.6}
    jobs = {"data": _done(), "phase1": _phase_done(1, 35)}
    jobs |= {f"eval-phase1-step-{s:09d}": _eval_done(1, s, {"semantic": {"miou": v}}) for s, v in miou.items()}
    plan = _plan(phase2_init="best", eval_every=1)
    alive = {"phase1": [(s, _ckpt(1, s)) for s in (20, 30, 35)]}
    (phase2,) = ready_jobs(plan, jobs, alive)
    assert phase2.spec.argv[-1] == f"phases.phase2.init_from={_ckpt(1, 30)}"
    pruned = {"phase1": [(s, _ckpt(1, s)) for s in (35,)]}
    (phase2,) = ready_jobs(plan, jobs, pruned)
    assert phase2.spec.argv[-1] == f"phases.phase2.init_from={_ckpt(1, 35)}"


def test_the_report_comes_last_and_completes_the_run():
    plan = _plan()
    jobs = {"data": _done(), "phase1": _phase_done(1, 35), "eval-phase1-step-000000035": _eval_done(1, 35),
            "phase2": {"state": "running", "kind": "train"}}  # fmt: skip
    assert ready_jobs(plan, jobs, {}) == [] and not is_complete(plan, jobs)
    jobs["phase2"] = _phase_done(2, 70)
    assert _names(ready_jobs(plan, jobs, {})) == ["eval-phase2-step-000000070"]
    jobs["eval-phase2-step-000000070"] = _eval_done(2, 70)
    (report,) = ready_jobs(plan, jobs, {})
    assert report.spec.argv == ("report", RUN, "--config", "c.yaml", "a=1")
    assert not is_complete(plan, jobs)
    jobs["report"] = _done(kind="task")
    assert is_complete(plan, jobs) and ready_jobs(plan, jobs, {}) == []
    assert is_complete(_plan(with_report=False), {k: v for k, v in jobs.items() if k != "report"})


def test_the_baseline_is_a_nested_run_with_its_own_jobs_and_the_report_waits_for_it():
    plan = _plan(baseline=True)
    specs = ready_jobs(plan, {"data": _done()}, {})
    assert _names(specs) == ["phase1", "baseline-phase1"]
    assert specs[1].spec.argv[-3:] == ("model.variant=frontend", f"run.dir={RUN}/baseline", "phase=1")
    assert specs[1].facts["phase_dir"] == f"{RUN}/baseline/phase1"
    nested = f"{RUN}/baseline"
    jobs = {"data": _done(), "phase1": _phase_done(1, 35), "eval-phase1-step-000000035": _eval_done(1, 35),
            "phase2": _phase_done(2, 70), "eval-phase2-step-000000070": _eval_done(2, 70),
            "baseline-phase1": _phase_done(1, 35, nested)}  # fmt: skip
    assert _names(ready_jobs(plan, jobs, {})) == ["baseline-eval-phase1-step-000000035"]
    jobs["baseline-eval-phase1-step-000000035"] = _eval_done(1, 35, run=nested)
    jobs["baseline-phase2"] = _phase_done(2, 70, nested)
    jobs["baseline-eval-phase2-step-000000070"] = _eval_done(2, 70, run=nested)
    assert _names(ready_jobs(plan, jobs, {})) == ["report"]


@pytest.mark.parametrize(("metric", "want_step"), [("semantic.miou", 20), ("depth.rel", 30)])
def test_best_checkpoint_knows_which_metrics_are_lower_is_better(metric, want_step):
    jobs = {
        "eval-phase1-step-000000020": _eval_done(1, 20, {"semantic": {"miou": 0.6}, "depth": {"rel": 0.3}}),
        "eval-phase2-step-000000030": _eval_done(2, 30, {"semantic": {"miou": 0.5}, "depth": {"rel": 0.2}}),
        "eval-phase2-step-000000040": _eval_done(2, 40, {"semantic": {"miou": float("nan")}}),
        "baseline-eval-phase2-step-000000030": _eval_done(2, 30, {"semantic": {"miou": 0.9}, "depth": {"rel": 0.1}}),
    }
    best = best_checkpoint(jobs, metric)
    assert best["step"] == want_step and best["metric"] == metric
    assert best_checkpoint(jobs, "semantic.miou", prefix="baseline-")["value"] == 0.9
    assert best_checkpoint({}, metric) is None


OWNER = "/runs/owner"


def _upstream(jobs: dict | None, committed=(), driven: bool = True) -> Upstream:
    return Upstream(OWNER, jobs, tuple(committed), driven)


def test_a_run_with_a_shared_phase1_has_no_phase1_job_and_starts_phase2_from_the_owners_checkpoint():
    plan = _plan(phase1_from=OWNER)
    jobs = {"data": _done()}
    owner = {"data": _done(), "phase1": {"state": "running", "kind": "train"}}
    assert ready_jobs(plan, jobs, {}) == []  # the owner not read: nothing to start
    assert ready_jobs(plan, jobs, {}, _upstream(owner)) == []  # its phase 1 still trains
    owner["phase1"] = _phase_done(1, 35, OWNER)
    assert ready_jobs(plan, jobs, {}, _upstream(owner)) == []  # its final checkpoint not evaluated yet
    owner["eval-phase1-step-000000035"] = {"state": "running", "kind": "eval"}
    assert ready_jobs(plan, jobs, {}, _upstream(owner)) == []
    owner["eval-phase1-step-000000035"] = _eval_done(1, 35, run=OWNER)
    (phase2,) = ready_jobs(plan, jobs, {}, _upstream(owner))
    assert phase2.spec.name == "phase2"
    assert phase2.spec.argv[-2:] == ("phase=2", f"phases.phase2.init_from={_ckpt(1, 35, OWNER)}")
    assert phase2.facts == {"phase": 2, "phase_dir": f"{RUN}/phase2"}
    # phase 2's evaluations and the report follow as in any run; no phase-1 job ever appears
    jobs["phase2"] = _phase_done(2, 12)
    assert _names(ready_jobs(plan, jobs, {"phase2": [(12, _ckpt(2, 12))]})) == ["eval-phase2-step-000000012"]
    jobs["eval-phase2-step-000000012"] = _eval_done(2, 12)
    assert _names(ready_jobs(plan, jobs, {})) == ["report"]
    jobs["report"] = _done(kind="task")
    assert is_complete(plan, jobs) and "phase1" not in jobs


def test_a_shared_phase1_with_phase2_init_best_takes_the_owners_best_checkpoint_still_committed():
    miou = {20: 0.5, 30: 0.7, 35: 0.6}
    owner = {"data": _done(), "phase1": _phase_done(1, 35, OWNER)}
    owner |= {f"eval-phase1-step-{s:09d}": _eval_done(1, s, {"semantic": {"miou": v}}, OWNER) for s, v in miou.items()}
    plan = _plan(phase1_from=OWNER, phase2_init="best")
    alive = [(s, _ckpt(1, s, OWNER)) for s in (20, 30, 35)]
    assert upstream_phase1(plan, _upstream(owner, alive)) == _ckpt(1, 30, OWNER)
    assert upstream_phase1(plan, _upstream(owner, alive[-1:])) == _ckpt(1, 35, OWNER)  # best pruned: the final one


def test_a_shared_phase1_that_nobody_will_finish_fails_the_run_in_one_line():
    plan = _plan(phase1_from=OWNER)
    failed = {"data": _done(), "phase1": {"state": "failed", "kind": "train", "log": f"{OWNER}/logs/phase1.3.log"}}
    assert upstream_failure(plan, _upstream(failed, driven=True)) is None  # its coordinator may still retry it
    reason = upstream_failure(plan, _upstream(failed, driven=False))
    assert reason.startswith(f"phase 1 comes from {OWNER}, which has its phase1 job failed (its log: {OWNER}/logs/")
    assert "re-run the sweep" in reason and "\n" not in reason
    assert "has no pipeline.json" in upstream_failure(plan, _upstream(None, driven=False))
    ended = {"data": _done(), "phase1": _phase_done(1, 35, OWNER)}  # its evaluation never submitted
    assert "has not finished phase 1 and its evaluation" in upstream_failure(plan, _upstream(ended, driven=False))
    ended["eval-phase1-step-000000035"] = _eval_done(1, 35, run=OWNER)
    assert upstream_failure(plan, _upstream(ended, driven=False)) is None  # done: nobody needs to drive it


def test_the_baseline_of_a_run_with_a_shared_phase1_trains_its_own_phase1():
    plan = _plan(phase1_from=OWNER, baseline=True)
    assert _names(ready_jobs(plan, {"data": _done()}, {}, _upstream({"data": _done()}))) == ["baseline-phase1"]
