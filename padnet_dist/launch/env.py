"""The launch layer: the only module that reads rank variables from the environment.

``world_from_env`` turns what torchrun or Slurm put in the environment into a ``World``;
``spawn_local`` starts N local ranks with a torchrun-like environment (``padnet-dist train --nproc N``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from padnet_dist.errors import UserError
from padnet_dist.world import World

DEFAULT_MASTER_PORT = 29500
# Under srun without MASTER_PORT: a port derived from the job id, so two jobs sharing a node do not collide,
# below Linux's ephemeral range (32768-60999) from which the kernel hands out outgoing connections' ports.
SLURM_PORT_BASE = 20000
SLURM_PORT_SPAN = 10000
RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")


def world_from_env(environ: Mapping[str, str], *, slurm_first_host: str = "") -> World:
    """The ``World`` of this process from a torchrun or Slurm environment (a single process when neither).

    torchrun (and ``spawn_local``) set RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK,
    MASTER_ADDR, MASTER_PORT. Under ``srun`` the ranks come from SLURM_PROCID, SLURM_NTASKS,
    SLURM_LOCALID, SLURM_NODEID, SLURM_NNODES; the master is ``MASTER_ADDR`` when set, else
    ``slurm_first_host`` (the first host of ``scontrol show hostnames $SLURM_JOB_NODELIST``, which the
    caller resolves), and the port is ``MASTER_PORT`` or ``slurm_job_port(SLURM_JOB_ID)``.
    """
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
    return World()


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


def local_rank_env(rank: int, nproc: int, master_port: int) -> dict[str, str]:
    """The torchrun-like variables rank ``rank`` of ``nproc`` local ranks receives."""
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(nproc),
        "LOCAL_WORLD_SIZE": str(nproc),
        "GROUP_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(master_port),
    }


def _die_with_parent() -> None:
    # A rank must not outlive a launcher that was SIGKILLed (it would keep training and checkpointing).
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn_local(nproc: int, argv: Sequence[str], *, grace_s: float = 10.0) -> int:
    """Run ``argv`` as ``nproc`` local ranks; return 0 if all succeed, else the first failure's exit code.

    Each child gets the torchrun-like environment of ``local_rank_env`` on a free port. When one rank
    fails, the others are terminated (SIGTERM, then SIGKILL after ``grace_s``) so no rank waits forever
    in a collective. A signal to the launcher is passed on to the ranks.
    """
    if nproc < 1:
        raise UserError(f"--nproc {nproc}: give at least 1 process")
    port = free_port()
    procs: list[subprocess.Popen] = []
    for rank in range(nproc):
        env = {k: v for k, v in os.environ.items() if k not in RANK_VARIABLES}
        env.update(local_rank_env(rank, nproc, port))
        # as torchrun does: N ranks each spinning all cores' OpenMP threads slow each other down many times
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
        procs.append(subprocess.Popen(list(argv), env=env, preexec_fn=_die_with_parent))

    def _forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, _forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        failure = 0
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                failure = failed[0]
                break
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.2)
        rank = next(i for i, c in enumerate(codes) if c == failure)
        print(f"padnet-dist: rank {rank} exited with code {failure}; stopping the other ranks", file=sys.stderr)
        _terminate(procs, grace_s)
        return failure if failure > 0 else 128 - failure  # a signal -N becomes the shell's 128+N
    finally:
        _terminate(procs, grace_s)
        for s, handler in previous.items():
            signal.signal(s, handler)


def _terminate(procs: Sequence[subprocess.Popen], grace_s: float) -> None:
    alive = [p for p in procs if p.poll() is None]
    for p in alive:
        p.terminate()
    deadline = time.monotonic() + grace_s
    for p in alive:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


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
