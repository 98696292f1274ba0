"""What the DeepSpeed seam derives from the config: refusals on CPU, the DeepSpeed dict, the lr schedule."""

from __future__ import annotations

import pytest
import torch

from padnet_dist.config import load_config
from padnet_dist.distributed import choose_backend
from padnet_dist.errors import UserError
from padnet_dist.train import engine as seam
from padnet_dist.train.schedule import lr_at
from padnet_dist.world import World

CPU = torch.device("cpu")


def test_fp16_on_cpu_is_refused_with_the_alternative():
    cfg = load_config("configs/tiny.yaml", ["engine.precision=fp16"])
    with pytest.raises(UserError, match="fp16 is not supported on CPU: use fp32"):
        seam.check_precision(cfg.engine, CPU)
    seam.check_precision(load_config("configs/tiny.yaml", ["engine.precision=bf16"]).engine, CPU)  # autocast


def test_backend_follows_the_device():
    cfg = load_config("configs/tiny.yaml", ["engine.backend=auto"])
    assert choose_backend(cfg.engine, CPU) == "gloo"
    assert choose_backend(cfg.engine, torch.device("cuda", 0)) == "nccl"
    with pytest.raises(UserError, match="use engine.backend=gloo"):
        choose_backend(load_config("configs/tiny.yaml", ["engine.backend=nccl"]).engine, CPU)


def test_deepspeed_config_carries_batch_accumulation_clipping_and_zero():
    cfg = load_config(
        "configs/tiny.yaml",
        ["data.batch_size=3", "optim.grad_accum_steps=4", "optim.grad_clip=2.5", "engine.zero_stage=2"],
    )
    ds = seam.deepspeed_config(cfg, World(rank=1, world_size=2), CPU)
    assert ds["train_micro_batch_size_per_gpu"] == 3 and ds["gradient_accumulation_steps"] == 4
    assert ds["train_batch_size"] == 3 * 4 * 2
    assert ds["gradient_clipping"] == 2.5
    assert ds["zero_optimization"]["stage"] == 2 and ds["zero_allow_untested_optimizer"]
    assert not ds["fp16"]["enabled"]
    assert not seam.deepspeed_config(load_config("configs/tiny.yaml"), World(), CPU)["zero_allow_untested_optimizer"]


def test_lr_schedules():
    assert [lr_at(s, base_lr=1e-3, total_steps=10) for s in (0, 9)] == [1e-3, 1e-3]  # the paper's constant
    assert lr_at(0, base_lr=1.0, total_steps=10, warmup_steps=4) == 0.25
    assert lr_at(3, base_lr=1.0, total_steps=10, warmup_steps=4) == 1.0
    assert lr_at(0, base_lr=1.0, total_steps=10, schedule="poly") == 1.0
    assert lr_at(10, base_lr=1.0, total_steps=10, schedule="poly") == 0.0
    assert lr_at(5, base_lr=1.0, total_steps=10, schedule="cosine") == pytest.approx(0.5)
    poly = [lr_at(s, base_lr=1.0, total_steps=10, schedule="poly") for s in range(10)]
    assert all(a > b for a, b in zip(poly, poly[1:]))
