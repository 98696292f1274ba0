"""The launch layer: World from torchrun and Slurm environments; --nproc spawning with failure propagation."""

from __future__ import annotations

import sys
import time

import pytest

from padnet_dist.commands.train import EXIT_INTERRUPTED
from padnet_dist.errors import UserError
from padnet_dist.launch.env import local_rank_env, slurm_job_port, spawn_local, world_from_env
from padnet_dist.world import World
from tests.train.tiny_run import REPO


def test_no_launcher_is_a_single_process():
    assert world_from_env({}) == World()


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
    script = (REPO / "slurm" / "train.sh").read_text()
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


def test_spawn_local_runs_every_rank(tmp_path):
    code = f"import os; open(os.path.join({str(tmp_path)!r}, os.environ['RANK']), 'w').write(os.environ['WORLD_SIZE'])"
    assert spawn_local(3, [sys.executable, "-c", code]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1", "2"]
    assert (tmp_path / "2").read_text() == "3"


def test_spawn_local_stops_the_others_when_a_rank_fails():
    # rank 1 fails at once; rank 0 would sleep for a minute if the launcher did not stop it
    code = "import os, sys, time; r = int(os.environ['RANK']); sys.exit(7) if r == 1 else time.sleep(60)"
    started = time.monotonic()
    assert spawn_local(2, [sys.executable, "-c", code], grace_s=5) == 7
    assert time.monotonic() - started < 30
