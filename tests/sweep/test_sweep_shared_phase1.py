"""`padnet-dist sweep` shares phase 1 between rows that train the same one: two PAD-Net rows of Table 2 on the local
backend run one phase-1 job, both finish with their table lines, and a re-run trains nothing."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO_ROOT
from tests.helpers.tiny_run import write_tiny_shards

ROWS = ["configs/ablations/t2_b_sp.yaml", "configs/ablations/t2_c_sp.yaml"]  # distillation B and C, final SP
SMALL = ["model.width=16", "model.distill_channels=8", "model.aggregation_channels=8"]


def _sweep(tmp_path: Path, train: str, val: str) -> subprocess.CompletedProcess:
    argv = [
        sys.executable, "-m", "padnet_dist.cli", "sweep", "--table", "2", "--rows", *ROWS, "--config",
        "configs/tiny.yaml", "--backend", "local", "--parallel", "2", f"data.train_manifest={train}",
        f"data.val_manifest={val}", f"run.dir={tmp_path / 'sweep'}", "run.max_steps=2", "pipeline.ranks_per_node=1",
        "pipeline.poll_every_s=0.2", *SMALL,
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_two_rows_with_the_same_phase1_train_it_once(tmp_path: Path) -> None:
    train = write_tiny_shards(str(tmp_path / "shards"), num=8)
    val = write_tiny_shards(str(tmp_path / "shards"), num=4, split="val")
    done = _sweep(tmp_path, train, val)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sweep = tmp_path / "sweep"
    owner_dir, dependant_dir = sweep / "t2_b_sp" / "seed0", sweep / "t2_c_sp" / "seed0"
    assert f"t2_c_sp/seed0: phase 1 from {owner_dir}" in done.stdout
    owner = json.loads((owner_dir / "pipeline.json").read_text())
    dependant = json.loads((dependant_dir / "pipeline.json").read_text())

    # one phase-1 job in the sweep: the owner's; the dependant has none, nor a phase-1 evaluation or directory
    assert owner["jobs"]["phase1"]["state"] == "succeeded"
    assert not [n for n in dependant["jobs"] if "phase1" in n] and not (dependant_dir / "phase1").exists()
    phase1_checkpoint = owner["jobs"]["phase1"]["checkpoint"]
    assert dependant["phase1_from"] == {
        "run_dir": str(owner_dir), "state": "ready", "checkpoint": phase1_checkpoint, "reason": None,
    }  # fmt: skip
    # the dependant's phase 2 started from the owner's final phase-1 checkpoint, as the owner's own phase 2 did
    for state in (owner, dependant):
        assert state["jobs"]["phase2"]["argv"][-1] == f"phases.phase2.init_from={phase1_checkpoint}"
    assert dependant["jobs"]["report"]["state"] == "succeeded"
    log = (dependant_dir / "logs" / "phase2.1.log").read_text().splitlines()
    (summary,) = [json.loads(line) for line in log if line.startswith("{") and '"initialised_from"' in line]
    assert summary["initialised_from"] == phase1_checkpoint  # the training summary of the dependant's phase 2

    # both rows are in the table; the dependant's report says where its phase 1 came from and shows it
    table = list(csv.DictReader(io.StringIO((sweep / "table2.csv").read_text())))
    assert [(r["preset"], r["seeds"]) for r in table] == [("t2_b_sp.yaml", "1"), ("t2_c_sp.yaml", "1")]
    report = json.loads((dependant_dir / "report.json").read_text())
    assert report["phase1_from"]["run_dir"] == str(owner_dir)
    assert report["phase1"]["evaluations"] and any(str(owner_dir) in note for note in report["notes"])

    before = {d: json.loads((d / "pipeline.json").read_text())["jobs"] for d in (owner_dir, dependant_dir)}
    again = _sweep(tmp_path, train, val)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "submitted" not in again.stdout  # no job ran again
    for d, jobs in before.items():
        now = json.loads((d / "pipeline.json").read_text())["jobs"]
        assert {n: r["attempts"] for n, r in now.items()} == {n: r["attempts"] for n, r in jobs.items()}
