"""``CheckpointUploader``: publishes checkpoint snapshots in a background thread, one at a time.

Training stops only for the snapshot (``checkpoint.take_snapshot``: an in-memory copy of this rank's state); the
thread then serialises, uploads, verifies and, once every rank's files are verified, commits it
(``checkpoint.publish``), while training goes on. Every rank runs one such thread; the threads agree over a side
process group of their own (``collectives.side_group``), so their collectives never interleave with training's.
At most one checkpoint is in flight: ``wait`` before the next ``submit``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass

import torch.distributed as dist

from padnet_dist.collectives import side_group
from padnet_dist.train import checkpoint
from padnet_dist.train.checkpoint import Snapshot

BACKGROUND_NICE_INCREMENT = 10


@dataclass(frozen=True)
class UploadOutcome:
    """What became of one submitted checkpoint; the same on every rank."""

    url: str
    step: int
    error: str | None  # None: committed; else why it was not (never committed)
    seconds: float  # the background work: writing, uploading, verifying, agreeing, committing

    @property
    def committed(self) -> bool:
        return self.error is None


class CheckpointUploader:
    """Publishes ``Snapshot`` s of this rank in a background thread (a collective object: every rank makes one,
    in the same order, and submits the same checkpoints).

    ``phase_dir_url``, ``keep_last``: where rank 0 prunes after each commit. ``is_main``: rank 0 logs commits.
    """

    def __init__(self, *, phase_dir_url: str, keep_last: int, storage, is_main: bool) -> None:
        self.phase_dir_url, self.keep_last, self.storage, self.is_main = phase_dir_url, keep_last, storage, is_main
        self.group = side_group()
        self._thread: threading.Thread | None = None
        self._in_flight: Snapshot | None = None
        self.published: Snapshot | None = None  # the last one waited for: its memory may be reused
        self._error: str | None = None
        self._seconds = 0.0

    @property
    def in_flight_step(self) -> int | None:
        """The step of the checkpoint being published, or None."""
        return self._in_flight.step if self._in_flight is not None else None

    @property
    def busy(self) -> bool:
        """True while the checkpoint in flight is still being published (``wait`` would block)."""
        return self._thread is not None and self._thread.is_alive()

    def submit(self, snap: Snapshot) -> None:
        """Start publishing ``snap`` in the background; the previous one must have been waited for."""
        if self._in_flight is not None:
            raise RuntimeError(f"checkpoint step {self.in_flight_step} is still in flight: wait() first")
        self._in_flight = snap
        self._error = None
        # A daemon: a rank that fails in training exits without waiting; its checkpoint is then never committed.
        self._thread = threading.Thread(target=self._publish, args=(snap,), name="padnet-ckpt-upload", daemon=True)
        self._thread.start()

    def wait(self) -> UploadOutcome | None:
        """Wait for the checkpoint in flight to be committed or given up; None when none was in flight."""
        if self._in_flight is None:
            return None
        assert self._thread is not None
        self._thread.join()
        snap = self._in_flight
        self._in_flight, self._thread = None, None
        self.published = snap
        return UploadOutcome(url=snap.ckpt_url, step=snap.step, error=self._error, seconds=self._seconds)

    def close(self) -> None:
        """Wait for the checkpoint in flight (if any), then release the side group."""
        self.wait()
        self.published = None
        if self.group is not None:
            dist.destroy_process_group(self.group)
            self.group = None

    def _publish(self, snap: Snapshot) -> None:
        started = time.monotonic()
        _lower_thread_priority()
        try:
            self._error = checkpoint.publish(
                snap, phase_dir_url=self.phase_dir_url, keep_last=self.keep_last, storage=self.storage,
                group=self.group,
            )  # fmt: skip
        except Exception as e:  # a rank gone from the agreement: reported by wait(), never committed
            self._error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        self._seconds = time.monotonic() - started
        if self._error is None and self.is_main:
            _log(f"checkpoint {snap.ckpt_url} committed, {self._seconds:.2f} s after its snapshot")
        elif self._error is not None:
            _log(f"checkpoint {snap.ckpt_url} was NOT committed: {self._error}")


def _lower_thread_priority(increment: int = BACKGROUND_NICE_INCREMENT) -> None:
    """Lower this thread's CPU priority on Linux (where niceness is per thread; the upload threads boto3 starts
    from it inherit it): when CPUs are short, training runs first and the upload takes longer.

    Measured on the 2-core test machine under load: a small-kernel training step ran 2.2x slower while a 100 MB
    checkpoint was serialised and hashed at equal priority, 1.27x at nice +10 (the writing took 4x longer).
    """
    if sys.platform != "linux":
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except OSError:
        pass


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
