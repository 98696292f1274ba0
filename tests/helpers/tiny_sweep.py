"""A tiny two-row sweep (Table 2: front-end baseline and PAD-Net C) for the backend tests, and what every backend's
sweep must leave behind: each run complete, the rows' jobs in flight together, the table files with their metrics."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

STEMS = ("t2_frontend_sp", "t2_c_sp")
ROWS = [f"configs/ablations/{stem}.yaml" for stem in STEMS]
SMALL = ["model.width=16", "model.distill_channels=8", "model.aggregation_channels=8"]


def sweep_command(train: str, val: str, sweep_dir: str, backend: str, *extra: str) -> list[str]:
    """``padnet-dist`` arguments of the tiny sweep: 2 steps per phase, one rank per job, polled every second."""
    return [
        "sweep", "--table", "2", "--config", "configs/tiny.yaml", "--backend", backend,
        f"data.train_manifest={train}", f"data.val_manifest={val}", f"run.dir={sweep_dir}", "run.max_steps=2",
        "pipeline.ranks_per_node=1", "pipeline.poll_every_s=1", *SMALL, *extra, "--rows", *ROWS,
    ]  # fmt: skip


def run_states(sweep_dir: str) -> dict[str, dict]:
    """Preset stem -> its seed-0 run's ``pipeline.json``."""
    return {stem: json.loads(Path(sweep_dir, stem, "seed0", "pipeline.json").read_text()) for stem in STEMS}


def check_sweep(sweep_dir: str, backend: str) -> dict[str, dict]:
    """Assert what a user relies on after a sweep on ``backend``; returns the runs' states.

    Every job of both runs succeeded on that backend with its log under the run directory; the two rows' phase-1
    jobs were both submitted before either ended (the rows ran concurrently, not one after the other); the tables
    hold each row's final phase-2 metrics, in the paper's row order.
    """
    states = run_states(sweep_dir)
    finals = {}
    for stem, state in states.items():
        jobs = state["jobs"]
        assert state["backend"] == backend, state
        assert {"data", "phase1", "phase2", "report"} <= set(jobs), jobs
        assert {n: r["state"] for n, r in jobs.items() if r["state"] != "succeeded"} == {}, jobs
        run_dir = Path(sweep_dir, stem, "seed0")
        for rec in jobs.values():
            assert Path(rec["log"]).is_file() and Path(rec["log"]).is_relative_to(run_dir), rec
        evals = [r for r in jobs.values() if r["kind"] == "eval" and r["phase"] == 2]
        finals[stem] = max(evals, key=lambda r: r["step"])["metrics"]
    phase1 = [state["jobs"]["phase1"] for state in states.values()]
    assert max(r["submitted_at"] for r in phase1) < min(r["ended_at"] for r in phase1), phase1

    table = list(csv.DictReader(io.StringIO(Path(sweep_dir, "table2.csv").read_text())))
    assert [r["preset"] for r in table] == [f"{stem}.yaml" for stem in STEMS]
    for line, stem in zip(table, STEMS, strict=True):
        assert line["seeds"] == "1"
        for key in ("miou", "mean_acc", "pixel_acc"):
            assert float(line[f"semantic.{key}"]) == finals[stem]["semantic"][key]
    md = Path(sweep_dir, "table2.md").read_text()
    assert "| Front-end + SP (baseline) | 1 |" in md and "| PAD-Net (Distillation C + SP) | 1 |" in md
    page = Path(sweep_dir, "sweep.html").read_text()
    for stem in STEMS:
        assert f'href="{stem}/seed0/report.html"' in page and Path(sweep_dir, stem, "seed0", "report.html").is_file()
    return states


def attempts(sweep_dir: str) -> dict[str, dict[str, int]]:
    return {stem: {n: r["attempts"] for n, r in state["jobs"].items()} for stem, state in run_states(sweep_dir).items()}
