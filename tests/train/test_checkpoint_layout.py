"""Checkpoint visibility, keep-last-k, model-config refusal and corrupt files, on local storage."""

from __future__ import annotations

import io
import json

import pytest
import torch

from padnet_dist.config import load_config, to_yaml
from padnet_dist.errors import UserError
from padnet_dist.storage import join_url, storage_for
from padnet_dist.train import checkpoint as ckpt
from padnet_dist.world import World


def _write_checkpoint(storage, run_dir, phase, step, cfg, *, commit=True, state=None):
    """A checkpoint directory as the trainer lays it out (without DeepSpeed's engine/ files)."""
    url = ckpt.checkpoint_url(ckpt.phase_dir(run_dir, phase), step)
    state = state if state is not None else {"w": torch.full((2, 2), float(step))}
    buf = io.BytesIO()
    torch.save(state, buf)
    files = {"config.yaml": to_yaml(cfg).encode(), "model.pt": buf.getvalue(), "trainer.json": b'{"step": 1}'}
    for name, data in files.items():
        storage.write_bytes(join_url(url, name), data)
    if commit:
        marker = {"step": step, "files": {k: len(v) for k, v in files.items()}}
        storage.write_bytes(join_url(url, ckpt.COMMIT_MARKER), json.dumps(marker).encode())
    return url


@pytest.fixture
def cfg():
    return load_config("configs/tiny.yaml")


def test_uncommitted_directory_is_never_picked(tmp_path, cfg):
    st = storage_for(str(tmp_path))
    run = str(tmp_path / "run")
    first = _write_checkpoint(st, run, 1, 4, cfg)
    _write_checkpoint(st, run, 1, 8, cfg, commit=False)  # a crash while writing step 8
    pdir = ckpt.phase_dir(run, 1)
    assert ckpt.list_committed(pdir, st) == [(4, first)]
    assert ckpt.newest_committed(pdir, st) == first
    cfg.run.dir = run
    assert ckpt.resolve_resume(cfg.run.resume, ckpt.phase_dir(cfg.run.dir, cfg.phase), st) == first
    cfg.run.resume = "never"
    with pytest.raises(UserError, match="run.resume=never but .*step-000000004 exists"):
        ckpt.resolve_resume(
            cfg.run.resume, ckpt.phase_dir(cfg.run.dir, cfg.phase), st
        )  # never silently mixes a fresh run into another's checkpoints
    cfg.run.dir = str(tmp_path / "fresh")
    assert ckpt.resolve_resume(cfg.run.resume, ckpt.phase_dir(cfg.run.dir, cfg.phase), st) is None


def test_explicit_resume_of_an_uncommitted_checkpoint_is_refused(tmp_path, cfg):
    st = storage_for(str(tmp_path))
    cfg.run.dir = str(tmp_path / "run")
    cfg.run.resume = _write_checkpoint(st, cfg.run.dir, 1, 8, cfg, commit=False)
    with pytest.raises(UserError, match="not a committed checkpoint"):
        ckpt.resolve_resume(cfg.run.resume, ckpt.phase_dir(cfg.run.dir, cfg.phase), st)


def test_prune_keeps_the_last_k_committed_and_drops_older_leftovers(tmp_path, cfg):
    st = storage_for(str(tmp_path))
    run = str(tmp_path / "run")
    for step in (2, 4, 6, 8):
        _write_checkpoint(st, run, 1, step, cfg)
    _write_checkpoint(st, run, 1, 5, cfg, commit=False)  # older crash leftover
    _write_checkpoint(st, run, 1, 10, cfg, commit=False)  # newer than the newest commit: may be in progress
    pdir = ckpt.phase_dir(run, 1)
    ckpt.prune(pdir, 2, st)
    assert [s for s, _ in ckpt.list_committed(pdir, st)] == [6, 8]
    remaining = sorted(p.name for p in (tmp_path / "run/phase1/checkpoints").iterdir())
    assert remaining == ["step-000000006", "step-000000008", "step-000000010"]


def test_checkpoint_of_another_model_is_refused_naming_the_keys(tmp_path, cfg):
    st = storage_for(str(tmp_path))
    url = _write_checkpoint(st, str(tmp_path / "run"), 1, 4, cfg)
    other = load_config("configs/tiny.yaml", ["model.width=64", "model.num_classes=5", "optim.momentum=0.5"])
    with pytest.raises(UserError) as info:
        ckpt.check_model_matches(url, other.model, st)
    message = str(info.value)
    assert "model.width" in message and "model.num_classes" in message
    assert "momentum" not in message and "\n" not in message
    ckpt.check_model_matches(url, cfg.model, st)  # same model, other optimiser settings: accepted


def test_phase2_without_phase1_checkpoint_says_what_to_do(tmp_path, cfg):
    cfg.run.dir = str(tmp_path / "run")
    with pytest.raises(UserError, match="train phase=1 first"):
        ckpt.resolve_phase2_init(cfg.phases.phase2.init_from, cfg.run.dir, storage_for(cfg.run.dir))


def test_read_inference_checkpoint_accepts_checkpoint_phase_and_run_dirs(tmp_path, cfg):
    st = storage_for(str(tmp_path))
    run = str(tmp_path / "run")
    _write_checkpoint(st, run, 1, 4, cfg)
    newest_p1 = _write_checkpoint(st, run, 1, 8, cfg)
    _write_checkpoint(st, run, 2, 3, cfg)
    _write_checkpoint(st, run, 2, 6, cfg, commit=False)
    got_cfg, state = ckpt.read_inference_checkpoint(newest_p1)
    assert got_cfg.model == cfg.model and torch.equal(state["w"], torch.full((2, 2), 8.0))
    assert torch.equal(ckpt.read_inference_checkpoint(ckpt.phase_dir(run, 1))[1]["w"], torch.full((2, 2), 8.0))
    assert torch.equal(ckpt.read_inference_checkpoint(run)[1]["w"], torch.full((2, 2), 3.0))  # phase 2 first
    with pytest.raises(UserError, match="no committed checkpoint"):
        ckpt.read_inference_checkpoint(str(tmp_path / "empty"))


def test_truncated_model_file_is_named(tmp_path, cfg):
    st = storage_for(str(tmp_path))
    url = _write_checkpoint(st, str(tmp_path / "run"), 1, 4, cfg)
    path = tmp_path / "run/phase1/checkpoints/step-000000004/model.pt"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(UserError, match=r"model\.pt is truncated or corrupt") as info:
        ckpt.read_inference_checkpoint(url)
    assert "\n" not in str(info.value)


def test_corrupt_json_is_named(tmp_path, cfg):
    st = storage_for(str(tmp_path))
    url = _write_checkpoint(st, str(tmp_path / "run"), 1, 4, cfg)
    st.write_bytes(join_url(url, "trainer.json"), b'{"step": 4, "epo')
    with pytest.raises(UserError, match=r"trainer\.json is truncated or corrupt"):
        ckpt.load(None, ckpt_url=url, model_cfg=cfg.model, world=World(), storage=st)  # fails before touching an engine


def test_phase2_init_from_accepts_a_checkpoint_a_phase_dir_or_a_run_dir(tmp_path, cfg):
    st = storage_for(str(tmp_path))
    other_run = str(tmp_path / "other")
    _write_checkpoint(st, other_run, 1, 4, cfg)
    newest = _write_checkpoint(st, other_run, 1, 8, cfg)
    cfg.run.dir = str(tmp_path / "run")
    for given in (newest, ckpt.phase_dir(other_run, 1), other_run):
        cfg.phases.phase2.init_from = given
        assert ckpt.resolve_phase2_init(cfg.phases.phase2.init_from, cfg.run.dir, st) == newest
