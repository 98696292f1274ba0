"""Training-system overhead: the full trainer against a bare loop of the same model and batch, same run.

Full trainer: ``train(cfg, world)`` (DeepSpeed engine, shard loader with augmentation, JSONL + TensorBoard
logging), phase 2 (all six losses), one CPU rank; steady-state samples/s from the per-step wall-clock times
in its JSONL log, skipping warm-up steps. Bare loop: forward, ``compute_losses``, backward and a torch SGD
step on one pre-made batch already in memory. Ratio bare/trainer = what the system costs.
Not a test: prints figures. Run: ``.venv/bin/python bench/train_overhead.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))

from padnet_dist.cli import main as cli_main  # noqa: E402
from padnet_dist.config import load_config  # noqa: E402
from padnet_dist.launch.env import free_port  # noqa: E402
from padnet_dist.train import checkpoint, train  # noqa: E402
from padnet_dist.train.objective import compute_losses  # noqa: E402
from padnet_dist.world import World  # noqa: E402


def make_shards(out: str, num: int) -> str:
    args = ["shard", "synthetic", "--num", str(num), "--height", "96", "--width", "128", "--split", "train"]
    assert cli_main([*args, "--out", out, "--samples-per-shard", "8", "--no-progress"]) == 0
    return f"{out}/train.manifest.json"


def step_times(log_file: Path, skip: int) -> list[float]:
    """Seconds between consecutive step records after the first ``skip`` steps."""
    times = [json.loads(line)["time"] for line in log_file.read_text().splitlines() if "time" in line]
    return [b - a for a, b in zip(times[skip:], times[skip + 1 :])]


def bare_loop_rate(cfg, init_state: dict, num_warmup: int, num_steps: int, batch: dict) -> float:
    from padnet_dist.model import build_model

    model = build_model(cfg.model)
    model.load_state_dict(init_state)
    model.train()
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.phases.phase2.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay
    )
    times = []
    for i in range(num_warmup + num_steps):
        start = time.perf_counter()
        losses = compute_losses(model(batch["rgb"]), batch, cfg.loss, cfg.data.ignore_index)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        if i >= num_warmup:
            times.append(time.perf_counter() - start)
    return cfg.data.batch_size / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="measured steps")
    parser.add_argument("--warmup", type=int, default=3, help="steps not measured")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: stable on shared machines)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="padnet-bench-") as tmp:
        manifest = make_shards(f"{tmp}/shards", 32)
        run_dir = f"{tmp}/run"
        total = args.warmup + args.steps
        overrides = [
            f"data.train_manifest={manifest}",
            "data.val_manifest=''",
            f"data.batch_size={args.batch_size}",
            f"run.dir={run_dir}",
            "run.checkpoint_every_steps=0",
            "run.log_every_steps=1",
            "run.tensorboard=true",
            "engine.deterministic=false",
            "phases.phase1.epochs=100",
            "phases.phase2.epochs=100",
        ]
        cfg1 = load_config(REPO / "configs/tiny.yaml", [*overrides, "run.max_steps=1"])
        train(cfg1, World(master_port=free_port()))
        cfg2 = load_config(REPO / "configs/tiny.yaml", [*overrides, "phase=2", f"run.max_steps={total}"])
        from padnet_dist.data.loader import build_train_loader

        batch = next(iter(build_train_loader(cfg2.data, World())))
        init = checkpoint.read_model_state(checkpoint.newest_committed(f"{run_dir}/phase1", _local()), _local())
        # bare loop before and after the trainer: the machine's load drifts, the mean evens it out
        bare_before = bare_loop_rate(cfg2, init, args.warmup, args.steps, batch)
        summary = train(cfg2, World(master_port=free_port()))
        log_file = Path(run_dir, "phase2/logs/rank0.jsonl")
        trainer_rate = args.batch_size / statistics.median(step_times(log_file, args.warmup))
        bare_after = bare_loop_rate(cfg2, init, args.warmup, args.steps, batch)
        bare_rate = (bare_before + bare_after) / 2
        records = [json.loads(line) for line in log_file.read_text().splitlines()][args.warmup :]
        data_wait_s = statistics.median(r["data_wait_s"] for r in records)
        compute_s = statistics.median(r["compute_s"] for r in records)

    print(f"model: {cfg2.model.backbone} width {cfg2.model.width}, batch {args.batch_size} of "
          f"{cfg2.data.crop_height}x{cfg2.data.crop_width}, phase 2 (six losses), 1 CPU rank, {torch.get_num_threads()} threads")  # fmt: skip
    print(
        f"full trainer   {trainer_rate:7.2f} samples/s  (steady state, median step; summary {summary['samples_per_s']:.2f})"
    )
    print(f"bare loop      {bare_rate:7.2f} samples/s  (forward+backward+SGD on a pre-made batch; "
          f"before {bare_before:.2f}, after {bare_after:.2f})")  # fmt: skip
    print(
        f"trainer step   data wait {data_wait_s * 1e3:.1f} ms (loader, data.num_workers={cfg2.data.num_workers}), "
        f"compute {compute_s * 1e3:.1f} ms (engine forward/backward/step) vs bare {args.batch_size / bare_rate * 1e3:.1f} ms"
    )
    print(f"overhead ratio {bare_rate / trainer_rate:7.3f}  (bare / trainer; 1.0 = no system overhead)")


def _local():
    from padnet_dist.storage import storage_for

    return storage_for(".")


if __name__ == "__main__":
    main()
