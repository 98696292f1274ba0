"""Asynchronous checkpoints: what is written is the state of the snapshot's step, whatever training did while it
was being written; resuming from such a checkpoint is bitwise exact; a failed upload is retried, reported and
never committed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from padnet_dist.errors import UserError
from padnet_dist.launch.env import free_port
from padnet_dist.storage import join_url, storage_for
from padnet_dist.train import checkpoint as ckpt
from padnet_dist.train import read_inference_checkpoint, train
from padnet_dist.train.hooks import TrainHooks
from padnet_dist.train.loop import Trainer, plan_phase
from padnet_dist.train.stop import StopRequest
from padnet_dist.world import World


def _state_now(trainer: Trainer) -> dict[str, torch.Tensor]:
    """The engine's weights, buffers and momentum, copied."""
    state = {f"module.{k}": v.detach().clone() for k, v in trainer.engine.module.state_dict().items()}
    for i, (param, st) in enumerate(trainer.optimizer.state.items()):
        state[f"momentum.{i}.{tuple(param.shape)}"] = st["momentum_buffer"].detach().clone()
    return state


def _state_written(ckpt_url: str) -> dict[str, torch.Tensor]:
    saved = torch.load(os.path.join(ckpt_url, "engine", "mp_rank_00_model_states.pt"), weights_only=True)
    state = {f"module.{k}": v for k, v in saved["module"].items()}
    momenta = saved["optimizer"]["state"]
    params = saved["optimizer"]["param_groups"][0]["params"]
    shapes = [tuple(v.shape) for v in (momenta[p]["momentum_buffer"] for p in params)]
    for i, (p, shape) in enumerate(zip(params, shapes, strict=True)):
        state[f"momentum.{i}.{shape}"] = momenta[p]["momentum_buffer"]
    return state


def test_written_state_is_the_snapshot_steps_although_training_moved_on(tiny_cfg, tmp_path):
    cfg = tiny_cfg("run.checkpoint_every_steps=0")
    world = World(master_port=free_port())
    stop = StopRequest()
    try:
        trainer = Trainer(cfg, world, plan_phase(cfg, world), hooks=TrainHooks(), stop=stop)
        batches = iter(trainer.loader)
        trainer.train_step(batches, epoch=0)
        trainer.train_step(batches, epoch=0)
        at_snapshot = _state_now(trainer)
        state = ckpt.TrainerState(step=2, epoch=0, loader_state=trainer.loader.state_dict(), rng_state={})
        url = ckpt.checkpoint_url(trainer.plan.phase_dir, 2)
        snap = ckpt.take_snapshot(trainer.engine, state, ckpt_url=url, phase=1, config_yaml=trainer.config_yaml,
                                  world=world, storage=trainer.storage)  # fmt: skip
        trainer.train_step(batches, epoch=0)  # training goes on before the snapshot is written
        trainer.train_step(batches, epoch=0)
        moved_on = _state_now(trainer)
        assert any(not torch.equal(at_snapshot[k], moved_on[k]) for k in at_snapshot if "momentum" in k)
        assert ckpt.publish(snap, phase_dir_url=trainer.plan.phase_dir, keep_last=2, storage=trainer.storage) is None
        trainer.uploader.close()
    finally:
        stop.restore()

    written = _state_written(url)
    assert written.keys() == at_snapshot.keys()
    for k in at_snapshot:
        assert torch.equal(written[k], at_snapshot[k]), f"{k} is not the state of step 2"
    marker = json.loads((tmp_path / "run/phase1/checkpoints/step-000000002/COMMITTED").read_text())
    assert marker["step"] == 2 and set(marker["sha256"]) == set(marker["files"])
    assert "model.pt" not in marker["files"]  # the weights are stored once


def test_resume_from_a_periodic_async_checkpoint_is_bitwise_exact(tiny_cfg, tmp_path):
    # 8 steps per epoch; checkpoints after steps 3 and 6 are written while steps 4-5 and 7-8 train
    common = ("run.checkpoint_every_steps=3", "run.keep_last=3", "optim.schedule=poly")
    straight = train(tiny_cfg(*common, run_dir=str(tmp_path / "straight")), World(master_port=free_port()))
    assert straight["step"] == 8 and len(straight["checkpoint_blocked_s"]) == 3
    step6 = straight["checkpoint"].replace("step-000000008", "step-000000006")
    resumed = train(tiny_cfg(*common, f"run.resume={step6}", run_dir=str(tmp_path / "resumed")),
                    World(master_port=free_port()))  # fmt: skip
    assert resumed["resumed_from"] == step6 and resumed["step"] == 8
    _, want = read_inference_checkpoint(straight["checkpoint"])
    _, got = read_inference_checkpoint(resumed["checkpoint"])
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_a_failed_upload_is_retried_reported_and_never_committed(s3, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(ckpt, "UPLOAD_RETRY_PAUSE_S", 0.0)
    st = storage_for(s3.url(), s3.storage_cfg)
    gone = s3.url("run/phase1/checkpoints/step-000000004").replace(s3.bucket, s3.bucket + "-deleted")
    snap = ckpt.Snapshot(ckpt_url=gone, step=4, epoch=0, rank=0, engine_states=[], extra_uploads={},
                         small_files={"trainer.json": b"{}"}, local_dir=tmp_path, staged=False)  # fmt: skip
    error = ckpt.publish(snap, phase_dir_url=s3.url("run/phase1"), keep_last=1, storage=st)
    assert error is not None and "does not exist" in error and "\n" not in error
    assert capsys.readouterr().err.count("retrying") == ckpt.UPLOAD_ATTEMPTS - 1
    assert not st.exists(join_url(gone, ckpt.COMMIT_MARKER))


def test_zero2_weights_for_inference_are_its_fp32_masters(tiny_cfg, tmp_path):
    # ZeRO-2 keeps the fp32 masters in the optimizer partitions and a full module copy in the module states: the
    # export reads the module states without DeepSpeed; it must equal DeepSpeed's consolidation of the masters
    from padnet_dist.train import engine as seam

    done = train(tiny_cfg("engine.zero_stage=2", "run.max_steps=2"), World(master_port=free_port()))
    _, exported = read_inference_checkpoint(done["checkpoint"])
    masters = seam.fp32_state_dict_from_zero_files(Path(done["checkpoint"]))
    trained = [k for k in masters if k.startswith("frontend.") and k.endswith("weight")]
    assert trained and all(torch.equal(exported[k], masters[k]) for k in masters)


def test_a_flipped_byte_is_caught_by_the_markers_checksum(tiny_cfg, tmp_path):
    run_dir = str(tmp_path / "run")
    first = train(tiny_cfg("run.max_steps=1", run_dir=run_dir), World(master_port=free_port()))
    state_file = Path(first["checkpoint"], "engine", "mp_rank_00_model_states.pt")
    data = bytearray(state_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the checksum can tell
    state_file.write_bytes(bytes(data))
    for read in (lambda: read_inference_checkpoint(first["checkpoint"]),
                 lambda: train(tiny_cfg(run_dir=run_dir), World(master_port=free_port()))):  # fmt: skip
        with pytest.raises(UserError, match=r"mp_rank_00_model_states\.pt is corrupt \(.*SHA-256") as info:
            read()
        assert "\n" not in str(info.value)
