"""``--nproc N``: N local ranks started and supervised by torch elastic's process start.

``run_local_ranks`` gives each rank the torchrun environment (``local_rank_env``) and hands the processes to
``torch.distributed.elastic.multiprocessing.start_processes``, which stops every other rank (SIGTERM, then
SIGKILL) as soon as one fails, so none waits forever in a collective. Two behaviours elastic lacks are added
here, each observed with torch 2.14 (``tests/test_launch.py`` pins them):

- Elastic answers a SIGTERM, SIGINT, SIGHUP or SIGQUIT to the launcher by terminating the ranks (``SignalException``
  for the caller to ``close``), and its ``start_new_session=True`` keeps a terminal's Ctrl-C from reaching them.
  We instead send the ranks SIGTERM (``train/stop.py`` turns it into "commit after this step") and keep waiting,
  so they commit and exit 75 and the launcher returns that code. A second Ctrl-C kills them.
- Elastic's ranks live on when the launcher is SIGKILLed (their own sessions; no parent-death signal), and a
  gloo group does not need the launcher, so they would keep training. Each rank therefore starts through
  ``python -m padnet_dist.launch.rank``, which asks the kernel for SIGKILL when its launcher dies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Sequence

from padnet_dist.errors import UserError
from padnet_dist.launch.env import free_port

LAUNCHER_PID_VARIABLE = "PADNET_LAUNCHER_PID"  # read by launch/rank.py: die with this process
_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)  # what elastic's start() takes over


def local_rank_env(rank: int, nproc: int, master_port: int) -> dict[str, str]:
    """The torchrun variables rank ``rank`` of ``nproc`` local ranks receives."""
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(nproc),
        "LOCAL_WORLD_SIZE": str(nproc),
        "GROUP_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(master_port),
    }


def cli_rank_argv(command_args: Sequence[str]) -> list[str]:
    """The command line of one local rank running ``padnet-dist COMMAND_ARGS...`` (bound to its launcher)."""
    return [sys.executable, "-m", "padnet_dist.launch.rank", "padnet_dist.cli", *command_args]


def run_local_ranks(nproc: int, argv: Sequence[str]) -> int:
    """Run ``argv`` as ``nproc`` local ranks; return 0 if all succeed, else the first failure's exit code.

    A rank killed by signal N counts as exit code 128 + N (as a shell reports it). ``OMP_NUM_THREADS`` is
    ``cores // nproc`` unless set: N ranks each spinning every core's OpenMP threads slow each other down.
    """
    if nproc < 1:
        raise UserError(f"--nproc {nproc}: give at least 1 process")
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException, start_processes

    port = free_port()
    omp_threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // nproc))
    envs = {
        rank: {
            **local_rank_env(rank, nproc, port),
            "OMP_NUM_THREADS": omp_threads,
            LAUNCHER_PID_VARIABLE: str(os.getpid()),
        }
        for rank in range(nproc)
    }
    previous = {s: signal.getsignal(s) for s in _HANDLED}
    context = None
    interrupts = 0
    try:
        context = start_processes(
            name="padnet-dist",
            entrypoint=argv[0],
            args={rank: tuple(argv[1:]) for rank in range(nproc)},
            envs=envs,
            logs_specs=DefaultLogsSpecs(log_dir=os.devnull),  # ranks write to our stdout/stderr; no temp dirs
        )
        while True:
            try:
                result = context.wait(period=0.2)
                break
            except SignalException as e:
                interrupts += e.sigval == signal.SIGINT
                forward = signal.SIGKILL if interrupts > 1 else signal.SIGTERM
                for pid in context.pids().values():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, forward)
    finally:
        for s in (signal.SIGTERM, signal.SIGINT):  # close() is bounded (SIGKILL after 30 s): let it finish
            signal.signal(s, signal.SIG_IGN)
        if context is not None:
            context.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if result is None or not result.is_failed():
        return 0
    first = min(result.failures.values(), key=lambda f: f.timestamp)
    code = first.exitcode if first.exitcode > 0 else 128 - first.exitcode
    print(
        f"padnet-dist: rank {first.local_rank} exited with code {code}; the other ranks were stopped", file=sys.stderr
    )
    return code
