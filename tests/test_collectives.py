"""The collectives on real gloo ranks (two processes) and without a process group (one process)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from padnet_dist import collectives
from tests.helpers import REPO_ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world_size: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        ints = collectives.sum_over_ranks(torch.tensor([rank + 1, 2**40], dtype=torch.int64))
        # 0.5 and 0.25 are exact in binary: the float64 sum is exact in any order
        floats = collectives.sum_over_ranks(torch.tensor([0.5 * (rank + 1), 0.25], dtype=torch.float64))
        result = {
            "ints": ints.tolist(),
            "int_dtype": str(ints.dtype),
            "floats": floats.tolist(),
            "float_dtype": str(floats.dtype),
            "max": collectives.max_over_ranks(10 * rank),
            "any_one": collectives.any_rank(rank == world_size - 1),
            "any_none": collectives.any_rank(False),
            "gathered": collectives.gather_objects({"rank": rank, "files": {f"f{rank}": rank}}),
        }
        collectives.barrier()
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_sum_flag_and_gather(tmp_path) -> None:
    mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert results[0] == results[1]  # every rank gets the same answer
    got = results[0]
    assert got["ints"] == [3, 2**41] and got["int_dtype"] == "torch.int64"
    assert got["floats"] == [1.5, 0.5] and got["float_dtype"] == "torch.float64"
    assert got["max"] == 10
    assert got["any_one"] is True and got["any_none"] is False
    assert got["gathered"] == [{"rank": 0, "files": {"f0": 0}}, {"rank": 1, "files": {"f1": 1}}]


NO_GROUP = """
import torch, torch.distributed as dist
from padnet_dist import collectives
assert not dist.is_initialized()
t = torch.tensor([1.0, 2.0], dtype=torch.float64)
assert torch.equal(collectives.sum_over_ranks(t), t)
assert collectives.max_over_ranks(7) == 7
assert collectives.any_rank(True) is True and collectives.any_rank(False) is False
assert collectives.gather_objects("x") == ["x"]
collectives.barrier()
print("ok")
"""


def test_without_a_process_group_each_returns_its_input() -> None:
    # a fresh interpreter: in-process training tests leave this pytest process's default group initialised
    out = subprocess.run([sys.executable, "-c", NO_GROUP], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
