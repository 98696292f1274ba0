"""``StopRequest``: SIGTERM becomes a request to commit and stop; a request made during start-up carries over."""

from __future__ import annotations

import os
import signal
import time

from padnet_dist.train.stop import StopRequest


def _sigterm_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)  # Python runs the handler at the next bytecode boundary of the main thread


def test_sigterm_is_noted_not_fatal_until_restored():
    before = signal.getsignal(signal.SIGTERM)
    stop = StopRequest()
    assert not stop.requested
    _sigterm_self()
    assert stop.requested and not stop.agreed
    stop.restore()
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_request_during_start_up_reaches_the_training_loop():
    held = StopRequest()  # padnet-dist train holds SIGTERM from its first line
    try:
        _sigterm_self()  # e.g. while torch is still importing
        loop = StopRequest()  # train() starts
        assert loop.requested
        loop.restore()
    finally:
        held.restore()


def test_after_the_loop_returned_a_sigterm_is_still_not_fatal():
    held = StopRequest()
    try:
        loop = StopRequest()
        _sigterm_self()
        loop.restore()
        assert held.requested  # the command learns the loop was asked to stop
        held.requested = False
        _sigterm_self()  # srun --kill-on-bad-exit after another rank exited 75: this rank keeps its exit code
        assert held.requested
    finally:
        held.restore()
