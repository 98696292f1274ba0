"""The launch layer: World from torchrun and Slurm environments; --nproc local ranks with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from padnet_dist.commands.train import EXIT_INTERRUPTED
from padnet_dist.errors import UserError
from padnet_dist.launch.env import slurm_job_port, world_from_env
from padnet_dist.launch.local import local_rank_env, run_local_ranks
from tests.helpers import REPO_ROOT


def test_no_launcher_is_a_single_process_on_a_free_port():
    w = world_from_env({})
    assert (w.rank, w.world_size, w.num_nodes, w.master_addr) == (0, 1, 1, "127.0.0.1")
    import socket

    with socket.socket() as s:  # the port is free: a rendezvous can bind it
        s.bind(("127.0.0.1", w.master_port))
    assert world_from_env({"MASTER_PORT": "31234"}).master_port == 31234


def test_two_single_process_runs_on_one_host_do_not_collide(tmp_path):
    # each process forms its one-rank gloo group and holds it until the other has formed its own too
    code = textwrap.dedent(
        f"""
        import os, pathlib, sys, time
        import torch.distributed as dist
        from padnet_dist.distributed import join_process_group
        from padnet_dist.launch.env import current_world
        join_process_group(current_world(), "gloo", timeout_s=30)
        me = pathlib.Path({str(tmp_path)!r}) / sys.argv[1]
        me.touch()
        deadline = time.monotonic() + 60
        while len(list(me.parent.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        dist.destroy_process_group()
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "RANK", "WORLD_SIZE", "SLURM_PROCID")}
    procs = [subprocess.Popen([sys.executable, "-c", code, name], env=env, cwd=REPO_ROOT) for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]


def test_torchrun_two_nodes_of_four():
    env = {
        "RANK": "6",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "2",
        "LOCAL_WORLD_SIZE": "4",
        "GROUP_RANK": "1",
        "MASTER_ADDR": "node-a",
        "MASTER_PORT": "29555",
    }
    w = world_from_env(env)
    assert (w.rank, w.local_rank, w.world_size, w.node_rank, w.num_nodes) == (6, 2, 8, 1, 2)
    assert (w.master_addr, w.master_port) == ("node-a", 29555)


def test_torchrun_wins_over_slurm_when_both_are_set():
    # torchrun started inside an sbatch allocation: torchrun's variables describe this process
    env = {"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}
    assert world_from_env(env).rank == 1


def test_slurm_maps_its_variables_and_the_first_host():
    env = {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "6",
        "SLURM_LOCALID": "2",
        "SLURM_NODEID": "1",
        "SLURM_NNODES": "2",
        "SLURM_JOB_ID": "12345",
    }
    w = world_from_env(env, slurm_first_host="n1")
    assert (w.rank, w.local_rank, w.world_size, w.node_rank, w.num_nodes) == (5, 2, 6, 1, 2)
    assert w.master_addr == "n1"
    assert w.master_port == 22345
    assert world_from_env({**env, "MASTER_ADDR": "h", "MASTER_PORT": "4000"}).master_port == 4000


def test_slurm_ports_stay_below_the_ephemeral_range():
    # Linux hands out 32768-60999 for outgoing connections; a rendezvous port there can be taken at random
    ports = {slurm_job_port(job_id) for job_id in range(0, 200_000, 7)}
    assert min(ports) >= 20000 and max(ports) < 32768
    assert slurm_job_port(1234) != slurm_job_port(1235)  # neighbouring jobs sharing a node


def test_train_script_requeues_on_the_interrupted_exit_code():
    script = (REPO_ROOT / "slurm" / "train.sh").read_text()
    assert f'"$rc" -eq {EXIT_INTERRUPTED}' in script and 'scontrol requeue "$SLURM_JOB_ID"' in script
    assert "SLURM_RESTART_COUNT" in script and "PADNET_MAX_REQUEUES" in script


def test_slurm_without_a_master_host_says_what_to_set():
    with pytest.raises(UserError, match="MASTER_ADDR"):
        world_from_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"})


def test_non_integer_rank_is_named():
    with pytest.raises(UserError, match="RANK='x'"):
        world_from_env({"RANK": "x", "WORLD_SIZE": "2"})


def test_local_rank_env_round_trips_to_the_world():
    w = world_from_env(local_rank_env(1, 3, 31000))
    assert (w.rank, w.local_rank, w.world_size, w.num_nodes, w.master_port) == (1, 1, 3, 1, 31000)


def _rank_module(tmp_path: Path, body: str) -> tuple[list[str], dict[str, str]]:
    """A module run by each local rank through ``padnet_dist.launch.rank`` (as ``--nproc`` ranks run the CLI)."""
    (tmp_path / "fake_rank.py").write_text(textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)]), "OUT": str(tmp_path)}
    return [sys.executable, "-m", "padnet_dist.launch.rank", "fake_rank"], env


def _launcher(argv: list[str], nproc: int, env: dict[str, str]) -> subprocess.Popen:
    code = f"import sys; from padnet_dist.launch.local import run_local_ranks; sys.exit(run_local_ranks({nproc}, {argv!r}))"
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)


def _wait_for(paths: list[Path], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, f"timed out waiting for {paths}"
        time.sleep(0.05)


def test_local_ranks_get_the_torchrun_environment_and_a_share_of_the_cores(tmp_path, monkeypatch):
    argv, env = _rank_module(
        tmp_path,
        """
        import json, os
        keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
                "OMP_NUM_THREADS")
        with open(os.path.join(os.environ["OUT"], "rank" + os.environ["RANK"]), "w") as f:
            json.dump({k: os.environ.get(k) for k in keys}, f)
        """,
    )
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("RANK", "9")  # a stale variable of an outer launcher must not leak into the ranks
    assert run_local_ranks(3, argv) == 0
    import json

    seen = [json.loads((tmp_path / f"rank{r}").read_text()) for r in range(3)]
    assert [(s["RANK"], s["LOCAL_RANK"], s["WORLD_SIZE"], s["GROUP_RANK"]) for s in seen] == [
        (str(r), str(r), "3", "0") for r in range(3)
    ]
    worlds = [world_from_env(s) for s in seen]
    assert len({(w.master_addr, w.master_port) for w in worlds}) == 1
    assert {s["OMP_NUM_THREADS"] for s in seen} == {str(max(1, (os.cpu_count() or 1) // 3))}
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert run_local_ranks(2, argv) == 0
    assert json.loads((tmp_path / "rank1").read_text())["OMP_NUM_THREADS"] == "5"


def test_local_ranks_stop_the_others_when_a_rank_fails():
    # rank 1 fails at once; rank 0 would sleep for a minute if the launcher did not stop it
    code = "import os, sys, time; r = int(os.environ['RANK']); sys.exit(7) if r == 1 else time.sleep(60)"
    started = time.monotonic()
    assert run_local_ranks(2, [sys.executable, "-c", code]) == 7
    assert time.monotonic() - started < 30


def test_nproc_below_one_is_a_user_error():
    with pytest.raises(UserError, match="--nproc 0"):
        run_local_ranks(0, [sys.executable, "-c", "pass"])


COMMITTING_RANK = """
import os, signal, sys, time
out, rank = os.environ["OUT"], os.environ["RANK"]
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
open(os.path.join(out, "ready" + rank), "w").close()
deadline = time.monotonic() + 60
while not stop and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(0.5 * int(rank))  # ranks finish their commit at different times
open(os.path.join(out, "committed" + rank), "w").close()
sys.exit(75 if stop else 0)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_launcher_lets_the_ranks_commit_and_returns_75(tmp_path, sig):
    argv, env = _rank_module(tmp_path, COMMITTING_RANK)
    launcher = _launcher(argv, 2, env)
    _wait_for([tmp_path / "ready0", tmp_path / "ready1"])
    launcher.send_signal(sig)
    _, err = launcher.communicate(timeout=60)
    assert launcher.returncode == EXIT_INTERRUPTED, err
    assert (tmp_path / "committed0").exists() and (tmp_path / "committed1").exists()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_a_sigkilled_launcher_leaves_no_rank_running(tmp_path):
    argv, env = _rank_module(
        tmp_path,
        """
        import os, time
        with open(os.path.join(os.environ["OUT"], "pid" + os.environ["RANK"]), "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)
        """,
    )
    launcher = _launcher(argv, 2, env)
    _wait_for([tmp_path / "pid0", tmp_path / "pid1"])
    time.sleep(0.2)  # the pid files are written before their contents land
    pids = [int((tmp_path / f"pid{r}").read_text()) for r in range(2)]
    launcher.kill()
    launcher.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)
