"""``StopRequest``: a SIGTERM asks the ranks to commit a checkpoint and stop; it does not kill them.

Slurm (``scancel --signal=TERM``, ``--signal=TERM@T`` before the time limit, a preemption), Kubernetes and the
``--nproc`` launcher all stop a job with SIGTERM. Imports nothing heavy, so a command can hold SIGTERM from its
first line, before torch is imported.
"""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGTERM,)


class StopRequest:
    """Notes SIGTERM in ``requested`` instead of dying, from construction until ``restore()``.

    Only in the main thread (Python's rule for signal handlers); elsewhere, e.g. in a Ray worker's training
    thread, ``requested`` stays False and the launcher reports a stop through ``TrainHooks.should_stop()``
    (the Ray launcher installs its own handler on the worker's main thread). A request already noted by the handler
    this one replaces (an outer ``StopRequest``) carries over; ``restore()`` puts that handler back.
    ``agreed`` is for the training loop: True once every rank knows that some rank was asked to stop.
    """

    def __init__(self) -> None:
        self.requested = False
        self.agreed = False
        self._previous: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._note)
            outer = [getattr(h, "__self__", None) for h in self._previous.values()]
            self.requested = any(isinstance(o, StopRequest) and o.requested for o in outer)

    def _note(self, _signum: int, _frame: object) -> None:
        self.requested = True

    def restore(self) -> None:
        """Give the signals back to the handlers they had before; an outer ``StopRequest`` learns of a request."""
        for s, handler in self._previous.items():
            outer = getattr(handler, "__self__", None)
            if isinstance(outer, StopRequest) and self.requested:
                outer.requested = True
            signal.signal(s, handler)  # type: ignore[arg-type]
        self._previous = {}
