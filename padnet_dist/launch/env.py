"""The ``World`` of this process from its environment (torchrun, Slurm, ``--nproc`` or none) and rendezvous ports.

``world_from_env`` turns what torchrun, Slurm or ``launch.local`` put in the environment into a ``World``;
``current_world`` reads the real environment.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
from collections.abc import Mapping

from padnet_dist.errors import UserError
from padnet_dist.world import World

DEFAULT_MASTER_PORT = 29500
# Under srun without MASTER_PORT: a port derived from the job id, so two jobs sharing a node do not collide,
# below Linux's ephemeral range (32768-60999) from which the kernel hands out outgoing connections' ports.
SLURM_PORT_BASE = 20000
SLURM_PORT_SPAN = 10000


def world_from_env(environ: Mapping[str, str], *, slurm_first_host: str = "") -> World:
    """The ``World`` of this process from a torchrun or Slurm environment (a single process when neither).

    torchrun (and ``launch.local``) set RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK,
    MASTER_ADDR, MASTER_PORT. Under ``srun`` the ranks come from SLURM_PROCID, SLURM_NTASKS,
    SLURM_LOCALID, SLURM_NODEID, SLURM_NNODES; the master is ``MASTER_ADDR`` when set, else
    ``slurm_first_host`` (the first host of ``scontrol show hostnames $SLURM_JOB_NODELIST``, which the
    caller resolves), and the port is ``MASTER_PORT`` or ``slurm_job_port(SLURM_JOB_ID)``. A world of one
    process (neither launcher, or a one-task Slurm step) takes a free port unless MASTER_PORT is set, so two
    single-process runs on one host do not both rendezvous on the same port.
    """
    world = _launcher_world(environ, slurm_first_host)
    if world.world_size == 1 and not environ.get("MASTER_PORT"):
        return dataclasses.replace(world, master_port=free_port())
    return world


def _launcher_world(environ: Mapping[str, str], slurm_first_host: str) -> World:
    """The ``World`` the launcher variables describe, before a single process picks its port."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        world_size = _int(environ, "WORLD_SIZE")
        local_world_size = _int(environ, "LOCAL_WORLD_SIZE", default=world_size)
        rank = _int(environ, "RANK")
        return World(
            rank=rank,
            local_rank=_int(environ, "LOCAL_RANK", default=rank % local_world_size),
            world_size=world_size,
            node_rank=_int(environ, "GROUP_RANK", default=rank // local_world_size),
            num_nodes=max(1, world_size // local_world_size),
            master_addr=environ.get("MASTER_ADDR", "127.0.0.1"),
            master_port=_int(environ, "MASTER_PORT", default=DEFAULT_MASTER_PORT),
        )
    if "SLURM_PROCID" in environ:
        master_addr = environ.get("MASTER_ADDR") or slurm_first_host
        if not master_addr:
            raise UserError(
                "under srun the master host is unknown: export MASTER_ADDR=$(scontrol show hostnames "
                "$SLURM_JOB_NODELIST | head -n1) before srun"
            )
        if "MASTER_PORT" in environ:
            port = _int(environ, "MASTER_PORT")
        else:
            port = slurm_job_port(_int(environ, "SLURM_JOB_ID", default=0))
        return World(
            rank=_int(environ, "SLURM_PROCID"),
            local_rank=_int(environ, "SLURM_LOCALID", default=0),
            world_size=_int(environ, "SLURM_NTASKS", default=1),
            node_rank=_int(environ, "SLURM_NODEID", default=0),
            num_nodes=_int(environ, "SLURM_NNODES", default=_int(environ, "SLURM_JOB_NUM_NODES", default=1)),
            master_addr=master_addr,
            master_port=port,
        )
    return World(
        master_addr=environ.get("MASTER_ADDR") or "127.0.0.1",
        master_port=_int(environ, "MASTER_PORT", default=DEFAULT_MASTER_PORT),
    )


def slurm_job_port(job_id: int) -> int:
    """The rendezvous port of Slurm job ``job_id``: 20000-29999, outside the ephemeral port range."""
    return SLURM_PORT_BASE + job_id % SLURM_PORT_SPAN


def slurm_first_host(environ: Mapping[str, str]) -> str:
    """The first host of the job's node list (via ``scontrol show hostnames``); "" outside Slurm."""
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    if not nodelist or "SLURM_PROCID" not in environ or environ.get("MASTER_ADDR"):
        return ""
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], check=True, capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise UserError(f"cannot expand SLURM_JOB_NODELIST={nodelist} with scontrol ({e}): set MASTER_ADDR") from None
    hosts = out.split()
    return hosts[0] if hosts else ""


def current_world() -> World:
    """The ``World`` of this process, from the real environment."""
    return world_from_env(os.environ, slurm_first_host=slurm_first_host(os.environ))


def free_port() -> int:
    """A TCP port free on this host right now (for a local rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _int(environ: Mapping[str, str], key: str, *, default: int | None = None) -> int:
    value = environ.get(key)
    if value is None or value == "":
        if default is None:
            raise UserError(f"environment variable {key} is not set: launch with torchrun, srun or --nproc")
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {key}='{value}' is not an integer") from None
