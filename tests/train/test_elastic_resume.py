"""Elastic resume with real ranks: 2 ranks stopped mid-epoch by SIGTERM resumed on 1, and 1 resumed on 2.

Every sample of every epoch is trained on exactly once (counted from the ranks' logs, ``data.log_sample_keys``),
and the resumed engine holds exactly the saved weights and optimizer state (compared with the saved files read
directly: DeepSpeed's module file, and for ZeRO-2 DeepSpeed's own fp32 consolidation and the raw partitions).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import torch

from padnet_dist.commands.train import EXIT_INTERRUPTED
from padnet_dist.errors import UserError
from padnet_dist.launch.env import free_port
from padnet_dist.storage import storage_for
from padnet_dist.train import checkpoint as ckpt
from padnet_dist.train import engine as seam
from padnet_dist.train.hooks import TrainHooks
from padnet_dist.train.loop import Trainer, plan_phase, train
from padnet_dist.train.reshard import read_full_state
from padnet_dist.train.stop import StopRequest
from padnet_dist.world import World
from tests.helpers import REPO_ROOT
from tests.helpers.tiny_run import tiny_overrides

pytestmark = pytest.mark.integration
NUM_SAMPLES = 16  # the tiny shards
# batch 1: 8 steps per epoch on 2 ranks, so that a SIGTERM lands mid-epoch; 2 epochs cross an epoch boundary after
# the change of world size
COMMON = ("phases.phase1.epochs=2", "data.batch_size=1", "data.log_sample_keys=true", "optim.schedule=poly")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _summary(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def _two_ranks(overrides: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "padnet_dist.cli", "train", "--nproc", "2", "--config", "configs/tiny.yaml"]
    return subprocess.Popen(
        [*cmd, *overrides], env=_env(), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _sigterm_after_first_commit(overrides: list[str], phase_dir: str) -> dict:
    """2 ranks, SIGTERM once a checkpoint is committed: they commit the step they are in and exit 75."""
    st = storage_for(phase_dir)
    launcher = _two_ranks(overrides)
    try:
        deadline = time.monotonic() + 900  # a loaded 2-core machine takes minutes to start two ranks
        while not ckpt.list_committed(phase_dir, st):
            assert launcher.poll() is None, launcher.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint was committed in time"
            time.sleep(0.1)
        launcher.send_signal(signal.SIGTERM)
        stdout, stderr = launcher.communicate(timeout=600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == EXIT_INTERRUPTED, stderr[-3000:]
    return _summary(stdout)


def _samples_per_epoch(phase_dir: str) -> dict[int, Counter]:
    """Keys each epoch trained on, over every rank's log (a step logged once, as the weights saw it)."""
    seen: dict[int, Counter] = defaultdict(Counter)
    for log in sorted(Path(phase_dir, "logs").glob("rank*.jsonl")):
        for line in log.read_text().splitlines():
            record = json.loads(line)
            seen[record["epoch"]].update(record["samples"])
    return seen


def _assert_exactly_once(phase_dir: str, num_epochs: int) -> None:
    seen = _samples_per_epoch(phase_dir)
    assert sorted(seen) == list(range(num_epochs))
    for epoch, keys in seen.items():
        assert len(keys) == NUM_SAMPLES and set(keys.values()) == {1}, f"epoch {epoch}: {keys}"


def _resumed_trainer(cfg, world: World) -> Trainer:
    plan = plan_phase(cfg, world)
    return Trainer(plan.cfg, world, plan, hooks=TrainHooks(), stop=StopRequest())


def _assert_engine_holds_the_checkpoint(trainer: Trainer, ckpt_url: str, zero_stage: int) -> None:
    """The resumed engine's weights and momentum equal what the saving ranks wrote, read straight from the files."""
    engine_dir = Path(ckpt_url, "engine")
    saved = torch.load(engine_dir / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    module = trainer.engine.module.state_dict()
    assert module.keys() == saved["module"].keys()
    assert all(torch.equal(module[k], saved["module"][k]) for k in module)
    momentum = seam.full_optimizer_state(trainer.engine, zero_stage)
    names = seam.trained_parameter_names(trainer.engine)
    if zero_stage == 0:
        direct = saved["optimizer"]["state"]
        assert len(direct) == len(names) and all(torch.equal(momentum[n], direct[i]["momentum_buffer"])
                                                 for i, n in enumerate(names))  # fmt: skip
        return
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    fp32 = get_fp32_state_dict_from_zero_checkpoint(ckpt_url, tag="engine")
    named = dict(trainer.engine.module.named_parameters())
    assert all(torch.equal(named[n].detach(), fp32[n]) for n in names)
    partitions = [
        torch.load(f, map_location="cpu", weights_only=False)["optimizer_state_dict"]["base_optimizer_state"]
        for f in sorted(engine_dir.glob("zero_pp_rank_*_mp_rank_00_optim_states.pt"))
    ]
    assert len(partitions) == 2
    flat_saved = torch.cat([p["state"][0]["momentum_buffer"] for p in partitions])
    flat_resumed = torch.cat([momentum[n].flatten() for n in names])
    assert torch.equal(flat_saved[: flat_resumed.numel()], flat_resumed)
    assert not flat_saved[flat_resumed.numel() :].any(), "only the group's padding follows"
    # a rank that owns only the last parameter (as on a larger world) reads only the partition holding it
    state = read_full_state(lambda name: engine_dir / name, saved_world_size=2, saved_zero_stage=2,
                            trained_names=names, needed=[names[-1]])  # fmt: skip
    assert state.files_read == ["mp_rank_00_model_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    assert torch.equal(state.momentum[names[-1]], momentum[names[-1]])


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_two_ranks_stopped_mid_epoch_finish_on_one(tiny_manifest, tiny_cfg, tmp_path, zero_stage):
    run_dir = str(tmp_path / "run")
    phase_dir = ckpt.phase_dir(run_dir, 1)
    extra = (*COMMON, f"engine.zero_stage={zero_stage}", "run.checkpoint_every_steps=1")
    stopped = _sigterm_after_first_commit(tiny_overrides(tiny_manifest, run_dir, *extra), phase_dir)
    assert stopped["stopped_by_signal"] and stopped["world_size"] == 2 and stopped["total_steps"] == 16
    assert stopped["step"] % 8, f"stopped at step {stopped['step']}, an epoch boundary: not mid-epoch"

    trainer = _resumed_trainer(tiny_cfg(*extra, run_dir=run_dir), World(master_port=free_port()))
    # the global batch of 2 (1 sample x 1 step x 2 ranks) is kept: 2 micro-batches per step on one rank
    assert trainer.cfg.optim.grad_accum_steps == 2 and trainer.step == stopped["step"]
    assert trainer.plan.total_steps == 16 and trainer.plan.first_epoch_end == 8
    _assert_engine_holds_the_checkpoint(trainer, stopped["checkpoint"], zero_stage)
    finished = trainer.fit()
    assert finished["finished"] and finished["step"] == 16 and finished["world_size"] == 1
    _assert_exactly_once(phase_dir, num_epochs=2)
    records = [json.loads(line) for line in Path(phase_dir, "logs", "rank0.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 17)), "steps continue from the checkpoint's"
    assert all(len(r["samples"]) == 2 for r in records[stopped["step"] :]), "one rank trains 2 samples a step"
    assert records[-1]["lr"] < records[stopped["step"]]["lr"], "the poly schedule continues"


def test_one_rank_stopped_mid_epoch_finishes_on_two(tiny_manifest, tiny_cfg, tmp_path):
    run_dir = str(tmp_path / "run")
    phase_dir = ckpt.phase_dir(run_dir, 1)
    # one rank, 2 micro-batches of 1 per step: 8 steps per epoch, the same global batch as 2 ranks x 1
    first = train(tiny_cfg(*COMMON, "optim.grad_accum_steps=2", "run.max_steps=3", run_dir=run_dir),
                  World(master_port=free_port()))  # fmt: skip
    assert first["step"] == 3 and not first["finished"]
    resumed = _two_ranks(tiny_overrides(tiny_manifest, run_dir, *COMMON, "optim.grad_accum_steps=2"))
    stdout, stderr = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, stderr[-3000:]
    summary = _summary(stdout)
    assert summary["finished"] and summary["step"] == 16 and summary["world_size"] == 2
    assert "global batch 2 -> 2 samples" in stderr and "optim.grad_accum_steps=1" in stderr
    _assert_exactly_once(phase_dir, num_epochs=2)
    for rank in (0, 1):
        lines = Path(phase_dir, "logs", f"rank{rank}.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in lines] == list(range(1 if rank == 0 else 4, 17))


def test_unresumable_geometries_are_refused_in_one_line(tiny_cfg, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    train(tiny_cfg("run.max_steps=1", run_dir=run_dir), World(master_port=free_port()))  # global batch 2
    with pytest.raises(UserError, match="global batch of 2 samples.*run.on_resize=keep_grad_accum") as info:
        plan_phase(tiny_cfg(run_dir=run_dir), World(rank=0, world_size=3))
    assert "\n" not in str(info.value)
    plan = plan_phase(tiny_cfg("run.on_resize=keep_grad_accum", run_dir=run_dir), World(rank=0, world_size=3))
    assert plan.cfg.optim.grad_accum_steps == 1
    assert "global batch 2 -> 6 samples" in capsys.readouterr().err
    with pytest.raises(UserError, match="ZeRO-3 state is re-sharded only by DeepSpeed on the same world size"):
        plan_phase(tiny_cfg("engine.zero_stage=3", run_dir=run_dir), World(rank=0, world_size=2))
