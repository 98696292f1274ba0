"""``padnet-dist pipeline --backend local`` end to end on the tiny preset, with real processes and gloo ranks: the whole
run to a report; and SIGKILL of the coordinator and its ranks in the middle of phase 1, then the same command again:
it completes without redoing finished jobs and ends with bitwise the weights of the uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from padnet_dist.storage import storage_for
from padnet_dist.train import checkpoint as ckpt
from padnet_dist.train import read_inference_checkpoint
from tests.helpers import REPO_ROOT
from tests.helpers.tiny_run import write_tiny_shards

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TIMEOUT_S = 1800  # minutes on an idle 2-core machine; a shared one under load has needed 20


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pipeline-shards")
    write_tiny_shards(str(out), num=16)
    write_tiny_shards(str(out), num=8, split="val")
    return out


def _argv(shards: Path, run_dir: Path) -> list[str]:
    # one rank of batch 2 over 16 samples: 8 steps per epoch; phase 1 has 16 steps, committed every 2
    return [sys.executable, "-m", "padnet_dist.cli", "pipeline", "--config", str(REPO_ROOT / "configs/tiny.yaml"),
            f"data.train_manifest={shards}/train.manifest.json", f"data.val_manifest={shards}/val.manifest.json",
            f"run.dir={run_dir}", "phases.phase1.epochs=2", "run.checkpoint_every_steps=2", "pipeline.ranks_per_node=1",
            "pipeline.poll_every_s=0.5", "--backend", "local"]  # fmt: skip


def _pipeline(shards: Path, run_dir: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(_argv(shards, run_dir), env=_env(), cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT_S)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _state(run_dir: Path) -> dict:
    return json.loads((run_dir / "pipeline.json").read_text())


def _final_weights(run_dir: Path) -> dict:
    _, weights = read_inference_checkpoint(_state(run_dir)["jobs"]["phase2"]["checkpoint"])
    return weights


@pytest.fixture(scope="module")
def straight(shards, tmp_path_factory) -> tuple[Path, str]:
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    return run_dir, _pipeline(shards, run_dir).stdout


def test_the_whole_pipeline_runs_to_a_report(straight):
    run_dir, stdout = straight
    assert stdout.splitlines()[-1] == f"report: {run_dir}/report.html"
    assert (run_dir / "report.html").is_file() and (run_dir / "report.json").is_file()
    state = _state(run_dir)
    assert set(state["jobs"]) == {"data", "phase1", "eval-phase1-step-000000016", "phase2",
                                  "eval-phase2-step-000000008", "report"}  # fmt: skip
    for name, rec in state["jobs"].items():
        assert rec["state"] == "succeeded" and rec["attempts"] == 1 and rec["exit_code"] == 0, name
        assert Path(rec["log"]).is_file(), name
    assert state["jobs"]["eval-phase2-step-000000008"]["metrics"]["depth"]["rel"] > 0
    assert state["best"]["metric"] == "semantic.miou"
    status = subprocess.run([sys.executable, "-m", "padnet_dist.cli", "status", str(run_dir)], capture_output=True,
                            text=True, env=_env(), check=True).stdout  # fmt: skip
    assert "phase2" in status and "semantic.miou=" in status and "coordinator: none holds the run" in status


def _wait_for(condition, what: str, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _processes_of(run_dir: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if any(str(run_dir) in part for part in p.info["cmdline"] or ()):
            found.append(p)
    return found


def test_sigkill_mid_phase1_then_the_same_command_completes_with_the_uninterrupted_weights(shards, straight, tmp_path):
    run_dir = tmp_path / "run"
    coordinator = subprocess.Popen(_argv(shards, run_dir), env=_env(), cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        phase1_dir = str(run_dir / "phase1")

        def phase1_committed() -> bool:
            running = (run_dir / "pipeline.json").exists() and "phase1" in _state(run_dir)["jobs"]
            return running and bool(ckpt.list_committed(phase1_dir, storage_for(phase1_dir)))

        _wait_for(phase1_committed, "phase 1's first committed checkpoint")
        job_id = _state(run_dir)["jobs"]["phase1"]["backend_id"]
        runner_pid = json.loads((run_dir / "jobs" / job_id / "started.json").read_text())["pid"]
        os.killpg(coordinator.pid, signal.SIGKILL)
        os.killpg(runner_pid, signal.SIGKILL)  # the job's runner and launcher; the ranks die with their launcher
        coordinator.wait()
    finally:
        if coordinator.poll() is None:
            os.killpg(coordinator.pid, signal.SIGKILL)
    _wait_for(lambda: not _processes_of(run_dir), "the killed run's processes to end", timeout_s=30)
    killed = _state(run_dir)
    assert killed["jobs"]["phase1"]["state"] in ("pending", "running")
    steps = [s for s, _ in ckpt.list_committed(phase1_dir, storage_for(phase1_dir))]
    assert steps and steps[-1] < 16, "phase 1 ended before it was killed: nothing was tested"

    stdout = _pipeline(shards, run_dir).stdout
    assert "re-attaching to phase1" in stdout and "phase1: running -> unknown" in stdout
    state = _state(run_dir)
    assert state["jobs"]["data"]["attempts"] == 1
    assert state["jobs"]["data"]["backend_id"] == killed["jobs"]["data"]["backend_id"]  # not redone
    assert state["jobs"]["phase1"]["attempts"] == 2 and state["jobs"]["phase2"]["attempts"] == 1
    assert all(rec["state"] == "succeeded" for rec in state["jobs"].values())
    want, got = _final_weights(straight[0]), _final_weights(run_dir)
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), f"{key} differs from the uninterrupted pipeline's"
