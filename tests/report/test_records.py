"""What the report reads of a run dir, on hand-written files (no training): which evaluation of a step is shown, the
coordinator's records of pruned checkpoints, and the best checkpoint without a coordinator."""

from __future__ import annotations

import json
import os

from padnet_dist.report.build import best_evaluation
from padnet_dist.report.records import read_run


def _write(path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def _metrics(miou: float, rel: float | None = None) -> dict:
    out = {"dataset": "synthetic", "num_samples": 2, "semantic": {"miou": miou}}
    if rel is not None:
        out["depth"] = {"rel": rel}
    return out


def test_each_step_shows_one_evaluation_eval_before_pipeline_record_before_training(tmp_path, monkeypatch):
    run = tmp_path / "run"
    ckpts = run / "phase2" / "checkpoints"
    _write(ckpts / "step-000000004" / "metrics.json", _metrics(0.4, 0.3))
    _write(run / "phase2" / "eval" / "step-000000004.json", _metrics(0.39, 0.31))  # same step, in training
    _write(run / "phase2" / "eval" / "step-000000006.json", _metrics(0.5, 0.2))  # only in training
    # the coordinator names checkpoints as the user spelt run.dir: here a relative path
    monkeypatch.chdir(tmp_path)
    pruned = os.path.join("run", "phase2", "checkpoints", "step-000000002")
    pipeline = {
        "jobs": {
            "eval-phase2-step-000000002": {"state": "succeeded", "checkpoint": pruned, "metrics": _metrics(0.3, 0.4)},
            "eval-phase2-step-000000008": {"state": "failed", "checkpoint": pruned[:-1] + "8", "metrics": {}},
        }
    }
    _write(run / "pipeline.json", pipeline)
    records = read_run(str(run))
    evaluations = records.phases[2].evaluations
    assert [(e.step, e.source) for e in evaluations] == [(2, "pipeline.json"), (4, "eval"), (6, "training")]
    assert evaluations[1].metrics["semantic"]["miou"] == 0.4 and records.phases[1].empty
    assert records.pipeline == pipeline

    # the coordinator's best wins; without it, the report ranks the evaluations itself
    os.remove(run / "pipeline.json")
    records = read_run(str(run))
    assert [e.step for e in records.phases[2].evaluations] == [4, 6]
    assert best_evaluation(records, "semantic.miou")["step"] == 6
    assert best_evaluation(records, "depth.rel") | {"checkpoint": ""} == {
        "metric": "depth.rel", "value": 0.2, "phase": 2, "step": 6, "checkpoint": "", "source": "report",
    }  # fmt: skip
    assert best_evaluation(records, "normals.mean") == {}
