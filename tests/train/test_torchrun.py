"""Two real ranks over gloo: torchrun for both phases; ``--nproc 2`` killed mid-run and resumed."""

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

from padnet_dist.commands.train import EXIT_INTERRUPTED
from padnet_dist.launch.env import free_port
from padnet_dist.storage import storage_for
from padnet_dist.train import checkpoint as ckpt
from padnet_dist.train import read_inference_checkpoint
from tests.helpers import REPO_ROOT
from tests.helpers.tiny_run import tiny_overrides

pytestmark = pytest.mark.integration
TORCHRUN = Path(sys.executable).parent / "torchrun"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _summary(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def _torchrun(*args: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
    if not TORCHRUN.exists():
        pytest.fail(f"{TORCHRUN} is missing: install torch in the venv")
    cmd = [str(TORCHRUN), "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "padnet_dist.cli", "train"]
    proc = subprocess.run(
        [*cmd, "--config", str(REPO_ROOT / "configs/tiny.yaml"), *args],
        env=_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_torchrun_two_ranks_phase1_then_phase2(tiny_manifest, tmp_path):
    run_dir = str(tmp_path / "run")
    # 16 samples over 2 ranks of batch 2: 4 steps per epoch
    p1 = _summary(_torchrun(*tiny_overrides(tiny_manifest, run_dir)).stdout)
    assert p1["world_size"] == 2 and p1["step"] == 4 and p1["finished"]
    p2 = _summary(_torchrun(*tiny_overrides(tiny_manifest, run_dir, "phase=2", "run.max_steps=2")).stdout)
    assert p2["initialised_from"] == p1["checkpoint"]

    st = storage_for(run_dir)
    assert [s for s, _ in ckpt.list_committed(ckpt.phase_dir(run_dir, 1), st)] == [4]
    assert [s for s, _ in ckpt.list_committed(ckpt.phase_dir(run_dir, 2), st)] == [2]
    done = Path(p1["checkpoint"])
    assert {"loader-rank0.json", "loader-rank1.json", "rng-rank0.json", "rng-rank1.json", "trainer.json"} <= {
        p.name for p in done.iterdir()
    }
    for phase, steps in ((1, 4), (2, 2)):
        for rank in (0, 1):
            lines = Path(run_dir, f"phase{phase}/logs/rank{rank}.jsonl").read_text().splitlines()
            assert [json.loads(line)["step"] for line in lines] == list(range(1, steps + 1))


def _launch_until_first_commit(overrides: list[str], phase_dir: str, st) -> subprocess.Popen:
    """`padnet-dist train --nproc 2` in the background, returned once its first checkpoint is committed."""
    cmd = [sys.executable, "-m", "padnet_dist.cli", "train", "--nproc", "2", "--config", "configs/tiny.yaml"]
    launcher = subprocess.Popen(
        [*cmd, *overrides], env=_env(), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 300
        while not ckpt.list_committed(phase_dir, st):
            assert launcher.poll() is None, launcher.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint was committed in time"
            time.sleep(0.2)
    except BaseException:
        launcher.kill()
        launcher.wait()
        raise
    return launcher


@pytest.mark.parametrize("victim", ["rank", "launcher"])
def test_nproc_run_killed_mid_way_resumes_from_the_newest_commit(tiny_manifest, tmp_path, victim):
    run_dir = str(tmp_path / "run")
    phase_dir, st = ckpt.phase_dir(run_dir, 1), storage_for(run_dir)
    overrides = tiny_overrides(tiny_manifest, run_dir, "phases.phase1.epochs=50", "run.checkpoint_every_steps=2")
    launcher = _launch_until_first_commit(overrides, phase_dir, st)
    try:
        ranks = {int(p.environ().get("RANK", -1)): p for p in psutil.Process(launcher.pid).children()}
        # a dead rank makes the launcher stop the others; a dead launcher takes its ranks with it
        (ranks[1] if victim == "rank" else launcher).send_signal(signal.SIGKILL)
        code = launcher.wait(timeout=120)
        gone, alive = psutil.wait_procs(list(ranks.values()), timeout=60)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert code != 0
    assert not alive, f"ranks outlived the launcher: {alive}"

    newest_step, newest = ckpt.list_committed(phase_dir, st)[-1]
    resumed = _summary(_torchrun(*overrides, f"run.max_steps={newest_step + 2}").stdout)
    assert resumed["resumed_from"] == newest
    assert resumed["step"] == newest_step + 2
    for rank in (0, 1):  # steps done after the last commit and redone after the kill are logged once
        lines = Path(run_dir, f"phase1/logs/rank{rank}.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in lines] == list(range(1, newest_step + 3))
    if victim == "rank":  # two ranks resume bitwise too (each rank's loader position, RNG and the all-reduce)
        straight_dir = str(tmp_path / "straight")
        straight_overrides = tiny_overrides(tiny_manifest, straight_dir, "phases.phase1.epochs=50")
        straight = _summary(_torchrun(*straight_overrides, f"run.max_steps={newest_step + 2}").stdout)
        _, want = read_inference_checkpoint(straight["checkpoint"])
        _, got = read_inference_checkpoint(resumed["checkpoint"])
        assert all(torch.equal(want[k], got[k]) for k in want)


def test_sigterm_commits_a_checkpoint_then_stops_every_rank(tiny_manifest, tmp_path):
    run_dir = str(tmp_path / "run")
    phase_dir, st = ckpt.phase_dir(run_dir, 1), storage_for(run_dir)
    overrides = tiny_overrides(tiny_manifest, run_dir, "phases.phase1.epochs=50", "run.checkpoint_every_steps=3")
    launcher = _launch_until_first_commit(overrides, phase_dir, st)
    try:
        launcher.send_signal(signal.SIGTERM)  # passed on to both ranks, as scancel or a preemption would
        stdout, stderr = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == EXIT_INTERRUPTED, stderr.decode()[-3000:]  # not finished: `afterok` must not fire
    summary = _summary(stdout.decode())
    assert summary["stopped_by_signal"] and not summary["finished"]
    assert ckpt.list_committed(phase_dir, st)[-1] == (summary["step"], summary["checkpoint"])
