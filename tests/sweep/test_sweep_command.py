"""`padnet-dist sweep` on the local backend: two Table 2 rows as full pipelines, the table beside the paper's numbers,
and a re-run that trains nothing."""

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

ROWS = ["configs/ablations/t2_frontend_sp.yaml", "configs/ablations/t2_c_sp.yaml"]
SMALL = ["model.width=16", "model.distill_channels=8", "model.aggregation_channels=8"]


def _sweep(tmp_path: Path, train: str, val: str) -> subprocess.CompletedProcess:
    argv = [
        sys.executable, "-m", "padnet_dist.cli", "sweep", "--table", "2", "--rows", *ROWS, "--config",
        "configs/tiny.yaml", "--backend", "local", f"data.train_manifest={train}", f"data.val_manifest={val}",
        f"run.dir={tmp_path / 'sweep'}", "run.max_steps=2", "pipeline.ranks_per_node=1", "pipeline.poll_every_s=0.2",
        *SMALL,
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_tiny_sweep_writes_the_table_and_a_rerun_trains_nothing(tmp_path: Path) -> None:
    train = write_tiny_shards(str(tmp_path / "shards"), num=8)
    val = write_tiny_shards(str(tmp_path / "shards"), num=4, split="val")
    done = _sweep(tmp_path, train, val)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sweep = tmp_path / "sweep"
    finals = {}
    for stem in ("t2_frontend_sp", "t2_c_sp"):
        state = json.loads((sweep / stem / "seed0" / "pipeline.json").read_text())
        assert state["jobs"]["report"]["state"] == "succeeded"
        evals = [r for n, r in state["jobs"].items() if r["kind"] == "eval" and r["phase"] == 2]
        finals[stem] = max(evals, key=lambda r: r["step"])["metrics"]
    table = list(csv.DictReader(io.StringIO((sweep / "table2.csv").read_text())))
    assert [r["preset"] for r in table] == ["t2_frontend_sp.yaml", "t2_c_sp.yaml"]  # the paper's row order
    for line, stem in zip(table, ("t2_frontend_sp", "t2_c_sp"), strict=True):
        assert line["seeds"] == "1"
        for key in ("miou", "mean_acc", "pixel_acc"):
            assert float(line[f"semantic.{key}"]) == finals[stem]["semantic"][key]
    assert [r["semantic.miou.paper"] for r in table] == ["0.291", "0.325"]
    md = (sweep / "table2.md").read_text()
    assert "| Front-end + SP (baseline) | 1 |" in md and "| PAD-Net (Distillation C + SP) | 1 |" in md
    page = (sweep / "sweep.html").read_text()
    assert 'href="t2_c_sp/seed0/report.html"' in page and (sweep / "t2_c_sp" / "seed0" / "report.html").is_file()
    before = {stem: (sweep / stem / "seed0" / "pipeline.json").read_text() for stem in finals}
    table_before = (sweep / "table2.csv").read_text()

    again = _sweep(tmp_path, train, val)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "submitted" not in again.stdout  # no job ran again
    for stem in finals:
        jobs = json.loads((sweep / stem / "seed0" / "pipeline.json").read_text())["jobs"]
        assert {n: r["attempts"] for n, r in jobs.items()} == {
            n: r["attempts"] for n, r in json.loads(before[stem])["jobs"].items()
        }
    assert (sweep / "table2.csv").read_text() == table_before


def test_sweep_without_rows_or_table_is_a_one_line_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "padnet_dist.cli", "sweep", "--config", "configs/tiny.yaml", f"run.dir={tmp_path}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "say which rows: --table 1|2|6|figure5, or --rows" in done.stderr
