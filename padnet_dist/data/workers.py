"""DataLoader worker processes leave stop signals to their rank.

Slurm (``scancel --signal``, ``--signal=SIG@T``, a preemption) and a terminal's Ctrl-C signal every process of a
job, DataLoader workers included. torch's worker handler dies on a SIGTERM that its parent did not send, and the
rank then raises "DataLoader worker (pid ...) is killed by signal: Terminated" instead of committing a checkpoint.
So workers drop SIGTERM and SIGINT from anyone but their rank: the rank notes the signal, finishes its step,
commits and ends its workers itself. A worker still dies with its rank: the kernel SIGKILLs it when the rank
process dies (``PR_SET_PDEATHSIG``), even when the rank was SIGKILLed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
from collections.abc import Iterator

WORKER_IGNORED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1


def worker_init(parent_pid: int, _worker_id: int) -> None:
    """``worker_init_fn`` of every DataLoader (bind ``parent_pid`` = the rank's pid with functools.partial).

    SIGINT is ignored. SIGTERM stays blocked and a thread takes it with ``sigwaitinfo``: sent by the rank (the
    DataLoader's shutdown, multiprocessing ending its daemon children at exit) it ends the worker at once, as
    torch's own handler does; sent by anyone else (slurmstepd, a preemption, ``kill``) it is dropped.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # forked inside ``stop_signals_held``: both are blocked already; a SIGINT that came since the fork is discarded
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    threading.Thread(target=_end_on_sigterm_from, args=(parent_pid,), name="sigterm-from-rank", daemon=True).start()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed in a DataLoader worker")
    if os.getppid() != parent_pid:  # the rank died before the line above took effect
        os._exit(1)


def _end_on_sigterm_from(parent_pid: int) -> None:
    # Every thread of the worker inherits the blocked SIGTERM, so each one arrives here.
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == parent_pid:
            os._exit(0)


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """Block SIGTERM and SIGINT in this thread while DataLoader workers are forked.

    A worker inherits the blocked mask, so a signal that reaches it before ``worker_init`` runs (torch's own
    handler would kill it) stays pending until ``worker_init`` has set up its policy. In this process a signal
    that came meanwhile is delivered when the block ends.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_IGNORED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
