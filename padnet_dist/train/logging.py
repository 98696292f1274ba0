"""Training logs: a JSONL file per rank, TensorBoard scalars and progress on rank 0.

Progress is a bar on a terminal and a plain line per logged step otherwise (Slurm and Ray job logs, where a
carriage-return bar is one endless line). Logs of a remote (``s3://``) run dir are written to a local mirror and
published on a timer (``upload_every_s``, a background thread), with each checkpoint (``uploads()`` gives the files
and their URLs) and at ``close``; a resumed run continues the published files.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, TextIO

from padnet_dist.eval.report import json_safe
from padnet_dist.storage.url import is_s3, join_url, local_path
from padnet_dist.world import World

# record keys that are not loss terms
_NOT_LOSSES = ("step", "epoch", "lr", "samples_per_s", "data_wait_s", "compute_s", "num_corrupt_skipped", "time",
               "data_wait_share", "comm_s", "max_memory_gb", "model_tflops_per_s", "mfu")  # fmt: skip


class RunLogger:
    """Per-step records of one phase: ``{phase_dir}/logs/rank{r}.jsonl`` and ``{phase_dir}/tensorboard``.

    A run resumed at step ``initial_step`` first drops the records after it (steps it will redo), so the log
    holds each step once, as the weights saw it.

    A record holds step, epoch, every loss term, lr, samples/s, data-wait and compute seconds per step, the
    data-wait share of the step, and the wall-clock time it was written (seconds since the epoch); with
    ``engine.comm_timing`` the all-reduce seconds in it (``comm_s``, part of ``compute_s``); on GPUs the peak
    memory (``max_memory_gb``), the model's achieved TFLOP/s and, given ``engine.peak_tflops``, the model FLOP
    utilisation (``mfu``). Lines are strict JSON: NaN and infinities are ``null``.

    ``progress_bar``: on rank 0, a tqdm bar when ``stream`` (default stderr) is a terminal, else a plain line per
    record holding a loss (step/total, ETA, loss terms, lr, samples/s of this rank, data-wait share).
    ``upload_every_s``: for an ``s3://`` phase dir, how often a background thread publishes this rank's log (and
    rank 0's TensorBoard files), each file atomically; 0 publishes with checkpoints and at ``close`` only.
    """

    def __init__(
        self,
        *,
        phase_dir_url: str,
        world: World,
        storage,
        tensorboard: bool,
        progress_bar: bool,
        total_steps: int,
        initial_step: int,
        description: str = "",
        upload_every_s: float = 0.0,
        stream: TextIO | None = None,
    ) -> None:
        self.world = world
        self.remote = is_s3(phase_dir_url)
        self._lock = threading.Lock()  # between the training thread's writes and the uploader's snapshots
        self._log_url = join_url(phase_dir_url, "logs", f"rank{world.rank}.jsonl")
        self._tb_url = join_url(phase_dir_url, "tensorboard")
        if self.remote:
            self._mirror = Path(tempfile.mkdtemp(prefix="padnet-logs-"))
            self._log_path = self._mirror / f"rank{world.rank}.jsonl"
            if storage.exists(self._log_url):
                storage.get_file(self._log_url, str(self._log_path))
            self._tb_dir = self._mirror / "tensorboard"
        else:
            self._log_path = Path(local_path(self._log_url))
            self._tb_dir = Path(local_path(self._tb_url))
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        _drop_records_after(self._log_path, initial_step)
        self._file = open(self._log_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._writer = None
        if tensorboard and world.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self._tb_dir), purge_step=initial_step or None)
        self._stream = stream if stream is not None else sys.stderr
        self._total_steps, self._initial_step, self._description = total_steps, initial_step, description
        self._started = time.monotonic()
        self._bar = None
        self._plain_progress = False
        if progress_bar and world.is_main:
            if self._stream.isatty():
                from tqdm import tqdm

                self._bar = tqdm(total=total_steps, initial=initial_step, desc=description, unit="step",
                                 dynamic_ncols=True, file=self._stream)  # fmt: skip
            else:
                self._plain_progress = True
        self._storage = storage
        self._stop_uploads = threading.Event()
        self._uploader = None
        if self.remote and upload_every_s > 0:
            self._uploader = threading.Thread(
                target=self._upload_periodically, args=(upload_every_s,), name="padnet-log-upload", daemon=True
            )
            self._uploader.start()

    def log(self, record: dict[str, Any]) -> None:
        """Append ``record`` (must hold ``step``) to this rank's JSONL; scalars to TensorBoard on rank 0."""
        line = json.dumps(json_safe(record), allow_nan=False) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
            if self._writer is not None:
                for key, value in record.items():
                    if key not in ("step", "epoch", "time") and isinstance(value, (int, float)):
                        self._writer.add_scalar(f"train/{key}", value, record["step"])
        if self._bar is not None and "total" in record:
            self._bar.set_postfix(loss=f"{record['total']:.4f}", refresh=False)
        if self._plain_progress and "total" in record:
            print(self._progress_line(record), file=self._stream, flush=True)

    def _progress_line(self, record: dict[str, Any]) -> str:
        step, total = record["step"], self._total_steps
        done = step - self._initial_step
        elapsed_s = time.monotonic() - self._started
        eta = "?" if done <= 0 else str(datetime.timedelta(seconds=round((total - step) * elapsed_s / done)))
        losses = " ".join(f"{k} {v:.4g}" for k, v in record.items() if k not in _NOT_LOSSES and _is_number(v))
        step_s = record.get("data_wait_s", 0.0) + record.get("compute_s", 0.0)
        wait_share = record.get("data_wait_s", 0.0) / step_s if step_s > 0 else 0.0
        head = f"{self._description} " if self._description else ""
        return (
            f"{head}step {step}/{total} ({100 * step / max(total, 1):.1f}%) | eta {eta} | loss {losses} | "
            f"lr {record.get('lr', float('nan')):.3g} | {record.get('samples_per_s', 0.0):.1f} samples/s/rank | "
            f"data wait {100 * wait_share:.0f}%"
            + (f" | {record['max_memory_gb']:.1f} GB" if "max_memory_gb" in record else "")
            + (f" | MFU {100 * record['mfu']:.0f}%" if "mfu" in record else "")
        )

    def advance(self, num_steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(num_steps)

    def uploads(self) -> dict[str, str]:
        """Local files to publish with a checkpoint (remote run dirs only): local path -> URL."""
        if not self.remote:
            return {}
        with self._lock:
            if not self._file.closed:
                self._file.flush()
            if self._writer is not None:
                self._writer.flush()
        return self._files()

    def _files(self) -> dict[str, str]:
        """The mirror's files (local path -> URL): this rank's log, and TensorBoard's event files on rank 0."""
        out = {str(self._log_path): self._log_url}
        if self._tb_dir.is_dir():
            for path in self._tb_dir.rglob("*"):
                if path.is_file():
                    out[str(path)] = join_url(self._tb_url, path.relative_to(self._tb_dir).as_posix())
        return out

    def _upload_periodically(self, every_s: float) -> None:
        while not self._stop_uploads.wait(every_s):
            try:
                self._publish_snapshot()
            except Exception as e:  # noqa: BLE001 (the next timer tick, checkpoint or close publishes again)
                warnings.warn(f"publishing logs failed, retrying later: {e}".splitlines()[0], stacklevel=1)

    def _publish_snapshot(self) -> None:
        """Copy the mirror's files under the lock (no half-written line), then upload the copies, each atomically."""
        snapshot = Path(tempfile.mkdtemp(prefix="padnet-logs-snap-"))
        try:
            copies: dict[str, str] = {}
            with self._lock:
                if self._file.closed:
                    return
                self._file.flush()
                if self._writer is not None:
                    self._writer.flush()
                for i, (local_file, url) in enumerate(self._files().items()):
                    copy = snapshot / str(i)
                    shutil.copyfile(local_file, copy)
                    copies[str(copy)] = url
            for copy, url in copies.items():
                self._storage.put_file(copy, url)
        finally:
            shutil.rmtree(snapshot, ignore_errors=True)

    def close(self, storage=None) -> None:
        """Close files; publish the mirror one last time when ``storage`` is given and the run dir is remote."""
        if self._uploader is not None:
            self._stop_uploads.set()
            self._uploader.join()
            self._uploader = None
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._file.close()
        if storage is not None and self.remote:
            for local_file, url in self.uploads().items():
                if os.path.exists(local_file):
                    storage.put_file(local_file, url)
        if self.remote:
            shutil.rmtree(self._mirror, ignore_errors=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _drop_records_after(path: Path, step: int) -> None:
    """Keep only records of steps <= ``step`` in the JSONL file ``path`` (rewritten atomically)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line torn by a crash
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, path)
