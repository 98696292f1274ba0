"""``python -m padnet_dist.launch.rank MODULE ARGS...``: ``python -m MODULE ARGS...`` as a local rank.

The rank asks the kernel to SIGKILL it when its launcher (``launch/local.py``) dies, so a SIGKILLed launcher leaves
no rank training; torch elastic starts ranks in sessions of their own and sets no parent-death signal.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_launcher(launcher_pid: int) -> None:
    """SIGKILL this process when ``launcher_pid`` (its parent) exits; exit now if it already has."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL)) != 0:
        print(
            f"padnet-dist rank: prctl failed (errno {ctypes.get_errno()}): it outlives a killed launcher",
            file=sys.stderr,
        )
    if os.getppid() != launcher_pid:  # the launcher died before prctl took effect
        os._exit(128 + int(signal.SIGKILL))


def main() -> None:
    from padnet_dist.launch.local import LAUNCHER_PID_VARIABLE

    launcher_pid = os.environ.get(LAUNCHER_PID_VARIABLE)
    if launcher_pid:
        die_with_launcher(int(launcher_pid))
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m padnet_dist.launch.rank MODULE [ARGS...]")
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
