"""Weak scaling: the trainer on 1 and 2 (and more, where the machine has cores) local ranks at the same per-rank batch.

Each run is ``padnet-dist train --nproc N`` (torch elastic local ranks, gloo, DeepSpeed ZeRO-0) of the demo preset
(ResNet-18 PAD-Net on 96x128 synthetic crops, phase 1), ``OMP_NUM_THREADS`` threads per rank, ``data.num_workers=0``,
``engine.comm_timing=true``. From every rank's JSONL log, steady-state steps only (warm-up skipped):
  step       median wall seconds between consecutive step records (the pace of the slowest rank)
  data wait  loader time in the step (``data_wait_s``)
  compute    forward, loss, backward, optimiser step, without the all-reduce (``compute_s - comm_s``)
  comm       the gradient all-reduce after backward (DeepSpeed's ``bwd_allreduce`` timer, ``comm_s``): the transfer
             plus the wait for the slower rank; the transfer alone is measured apart (``allreduce_seconds``: the same
             number of fp32 elements all-reduced by N gloo ranks, nothing else running in them)
  other      the rest of the step (stop agreement, logging)
Weak-scaling efficiency = (samples/s with N ranks) / (N x samples/s with 1 rank). Not a test: prints figures.
Run: ``.venv/bin/python bench/scaling.py`` (a few minutes; ``--ranks 1 2 4`` where there are 4 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))

from padnet_dist.cli import main as cli_main  # noqa: E402
from padnet_dist.config import load_config  # noqa: E402
from padnet_dist.launch.env import free_port  # noqa: E402
from padnet_dist.model import build_model  # noqa: E402


def make_shards(out: str, num: int) -> str:
    args = ["shard", "synthetic", "--num", str(num), "--height", "120", "--width", "160", "--split", "train"]
    assert cli_main([*args, "--out", out, "--samples-per-shard", "16", "--no-progress"]) == 0
    return f"{out}/train.manifest.json"


def run_trainer(num_ranks: int, overrides: list[str], threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        "-m",
        "padnet_dist.cli",
        "train",
        "--config",
        "configs/demo.yaml",
        "--nproc",
        str(num_ranks),
        *overrides,
    ]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{num_ranks}-rank run failed ({done.returncode}):\n{done.stderr[-3000:]}")


def split(log_dir: Path, num_ranks: int, warmup: int) -> dict[str, float]:
    """Median per-step seconds of each part, averaged over ranks; ``step`` is the slowest rank's pace."""
    parts: dict[str, list[float]] = {"step": [], "data wait": [], "compute": [], "comm": [], "other": []}
    for rank in range(num_ranks):
        records = [json.loads(line) for line in (log_dir / f"rank{rank}.jsonl").read_text().splitlines()]
        records = [r for r in records if "time" in r][warmup:]
        steps = [b["time"] - a["time"] for a, b in zip(records, records[1:])]
        later = records[1:]
        parts["step"].append(statistics.median(steps))
        parts["data wait"].append(statistics.median(r["data_wait_s"] for r in later))
        parts["comm"].append(statistics.median(r["comm_s"] for r in later))
        parts["compute"].append(statistics.median(r["compute_s"] - r["comm_s"] for r in later))
    out = {k: statistics.mean(v) for k, v in parts.items() if v}
    out["step"] = max(parts["step"])
    out["other"] = max(0.0, out["step"] - out["data wait"] - out["compute"] - out["comm"])
    return out


def _allreduce_worker(rank: int, world_size: int, port: int, numel: int, repeat: int, threads: int, queue) -> None:
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    buffer = torch.ones(numel)
    times = []
    for _ in range(repeat + 2):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(buffer)
        times.append(time.perf_counter() - start)
    if rank == 0:
        queue.put(statistics.median(times[2:]))
    dist.destroy_process_group()


def allreduce_seconds(world_size: int, numel: int, threads: int, repeat: int = 20) -> float:
    """Median seconds of one gloo all-reduce of ``numel`` fp32 elements across ``world_size`` local processes."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=_allreduce_worker, args=(r, world_size, port, numel, repeat, threads, queue))
        for r in range(world_size)
    ]
    for p in procs:
        p.start()
    result = queue.get(timeout=300)
    for p in procs:
        p.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=20, help="steps per run, warm-up included")
    parser.add_argument("--warmup", type=int, default=4, help="steps not measured")
    parser.add_argument("--batch-size", type=int, default=4, help="per rank")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank (OMP_NUM_THREADS)")
    parser.add_argument("--zero-stage", type=int, default=0)
    parser.add_argument("--overlap-comm", action="store_true", help="engine.overlap_comm (ZeRO 1-2)")
    parser.add_argument("--reduce-bucket-size", type=int, default=500_000_000)
    args = parser.parse_args()
    cfg = load_config(REPO / "configs/demo.yaml", ["model.pretrained=''"])
    model = build_model(cfg.model)
    numel = sum(p.numel() for p in model.phase_parameters(1))
    load = os.getloadavg()[0]
    results = {}
    with tempfile.TemporaryDirectory(prefix="padnet-scaling-") as tmp:
        manifest = make_shards(f"{tmp}/shards", 16 * max(args.ranks) * args.batch_size)
        for n in args.ranks:
            run_dir = f"{tmp}/run{n}"
            run_trainer(
                n,
                [
                    f"data.train_manifest={manifest}",
                    "data.val_manifest=''",
                    "data.num_workers=0",
                    f"data.batch_size={args.batch_size}",
                    "model.pretrained=''",
                    f"run.dir={run_dir}",
                    f"run.max_steps={args.steps}",
                    "run.checkpoint_every_steps=0",
                    "run.log_every_steps=1",
                    "run.tensorboard=false",
                    "run.progress_bar=false",
                    "phases.phase1.epochs=1000",
                    "engine.comm_timing=true",
                    f"engine.zero_stage={args.zero_stage}",
                    f"engine.overlap_comm={str(args.overlap_comm).lower()}",
                    f"engine.reduce_bucket_size={args.reduce_bucket_size}",
                ],
                args.threads,
            )
            results[n] = split(Path(run_dir, "phase1", "logs"), n, args.warmup)
        transfer = {n: allreduce_seconds(n, numel, args.threads) for n in args.ranks if n > 1}

    print(f"demo preset, phase 1, {args.batch_size} samples of 96x128 per rank, {numel / 1e6:.2f} M trained "
          f"parameters, ZeRO-{args.zero_stage}, {args.threads} thread(s) per rank, data.num_workers=0; "
          f"{os.cpu_count()} CPUs, load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end "
          "(other jobs share the machine)")  # fmt: skip
    print("ranks  samples/s  efficiency  step ms  = data wait + compute + comm (transfer) + other")
    base = args.batch_size / results[min(args.ranks)]["step"] / min(args.ranks)
    for n, r in results.items():
        rate = n * args.batch_size / r["step"]
        comm = f"{r['comm'] * 1e3:6.1f}" + (f" ({transfer[n] * 1e3:.1f})" if n in transfer else "")
        print(f"{n:5d}  {rate:9.2f}  {rate / (n * base):10.2f}  {r['step'] * 1e3:7.1f}  = {r['data wait'] * 1e3:6.1f}"
              f" + {r['compute'] * 1e3:6.1f} + {comm} + {r['other'] * 1e3:5.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
