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


GPU = torch.device("cuda", 0)  # only the derived settings are computed: no GPU is touched
GPU_PRESET = [
    "engine.deterministic=false",
    "engine.precision=bf16",
    "engine.zero_stage=2",
    "engine.channels_last=true",
    "engine.compile=true",
    "engine.compile_mode=max-autotune",
    "engine.reduce_bucket_size=50000000",
    "engine.allgather_bucket_size=50000000",
    "engine.overlap_comm=true",
    "engine.nccl_env={NCCL_IB_DISABLE: '1', NCCL_SOCKET_IFNAME: eth0}",
    "engine.peak_tflops=989",
]


def test_a_gpu_preset_gives_deepspeed_buckets_overlap_and_bf16_as_autocast_over_fp32_weights():
    cfg = load_config("configs/tiny.yaml", GPU_PRESET)
    ds = seam.deepspeed_config(cfg, World(rank=0, world_size=8), GPU)
    zero = ds["zero_optimization"]
    assert zero == {"stage": 2, "reduce_bucket_size": 50_000_000, "allgather_bucket_size": 50_000_000,
                    "overlap_comm": True}  # fmt: skip
    # DeepSpeed's bf16 would cast BatchNorm parameters but not its buffers: bf16 is torch autocast instead,
    # the weights (and DeepSpeed's optimizer state) stay fp32
    assert not ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert not ds["wall_clock_breakdown"]
    assert seam.gpu_path(cfg.engine, GPU, pin_memory=True) == {
        "channels_last": True,
        "compile": True,
        "compile_mode": "max-autotune",
        "cudnn_benchmark": True,
        "pin_memory": True,
        "autocast": "bfloat16",
        "nccl_env": {"NCCL_IB_DISABLE": "1", "NCCL_SOCKET_IFNAME": "eth0"},
    }
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with seam.autocast(cfg.engine, CPU):  # the same context on CPU: bf16 compute, fp32 parameters
        out = model(torch.randn(1, 3, 8, 8))
    assert out.dtype == torch.bfloat16 and all(p.dtype == torch.float32 for p in model.parameters())


def test_the_gpu_path_is_off_on_cpu_with_one_warning_and_deterministic_turns_autotuning_off():
    cfg = load_config("configs/tiny.yaml", GPU_PRESET)
    settings = seam.gpu_path(cfg.engine, CPU, pin_memory=True)
    assert not any(settings[k] for k in ("channels_last", "compile", "cudnn_benchmark", "pin_memory", "nccl_env"))
    with pytest.warns(UserWarning, match="engine.channels_last, engine.compile, engine.nccl_env ignored on CPU"):
        seam.warn_cpu_only_settings(cfg.engine, CPU)
    deterministic = load_config("configs/tiny.yaml", [*GPU_PRESET, "engine.deterministic=true"])
    assert not seam.gpu_path(deterministic.engine, GPU, pin_memory=True)["cudnn_benchmark"]
    model = seam.prepare_model(torch.nn.Conv2d(3, 4, 3), cfg.engine, CPU)
    assert model._compiled_call_impl is None and model.weight.is_contiguous()  # eager, NCHW


@pytest.mark.parametrize(
    "override,message",
    [
        ("engine.nccl_env={nccl_debug: INFO}", "only NCCL_\\* variables"),
        ("engine.compile_mode=fastest", "engine.compile_mode='fastest' is not one of"),
        ("engine.reduce_bucket_size=0", "reduce_bucket_size and engine.allgather_bucket_size must be >= 1"),
        ("engine.peak_tflops=-1", "engine.peak_tflops must be >= 0"),
    ],
)
def test_gpu_path_settings_are_validated_at_load(override, message):
    from padnet_dist.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config("configs/tiny.yaml", [override])


def test_compile_falls_back_to_eager_when_the_backend_fails():
    def broken_backend(graph_module, example_inputs):
        raise RuntimeError("no compiler for this graph")

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    x = torch.randn(2, 3, 8, 8)
    want = model(x)
    names = list(model.state_dict())
    assert seam.compile_model(model, backend=broken_backend)
    got = model(x)  # dynamo reports the backend failure and runs the frame eagerly
    assert torch.equal(got, want)
    assert list(model.state_dict()) == names  # compiled in place: checkpoints keep their keys
    torch._dynamo.reset()
