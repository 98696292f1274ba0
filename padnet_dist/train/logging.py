"""Training logs: a JSONL file per rank, TensorBoard scalars and a progress bar on rank 0.

Logs of a remote (``s3://``) run dir are written to a local mirror and published with each checkpoint
(``uploads()`` gives the files and their URLs); a resumed run continues the published files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from padnet_dist.storage.url import is_s3, join_url, local_path
from padnet_dist.world import World


class RunLogger:
    """Per-step records of one phase: ``{phase_dir}/logs/rank{r}.jsonl`` and ``{phase_dir}/tensorboard``.

    A run resumed at step ``initial_step`` first drops the records after it (steps it will redo), so the log
    holds each step once, as the weights saw it.

    A record holds step, epoch, every loss term, lr, samples/s, data-wait and compute seconds per step, and the
    wall-clock time it was written (seconds since the epoch).
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
    ) -> None:
        self.world = world
        self.remote = is_s3(phase_dir_url)
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
        self._bar = None
        if progress_bar and world.is_main:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=initial_step, desc=description, unit="step", dynamic_ncols=True)

    def log(self, record: dict[str, Any]) -> None:
        """Append ``record`` (must hold ``step``) to this rank's JSONL; scalars to TensorBoard on rank 0."""
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in record.items():
                if key not in ("step", "epoch", "time") and isinstance(value, (int, float)):
                    self._writer.add_scalar(f"train/{key}", value, record["step"])
        if self._bar is not None and "total" in record:
            self._bar.set_postfix(loss=f"{record['total']:.4f}", refresh=False)

    def advance(self, num_steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(num_steps)

    def uploads(self) -> dict[str, str]:
        """Local files to publish with a checkpoint (remote run dirs only): local path -> URL."""
        if not self.remote:
            return {}
        if not self._file.closed:
            self._file.flush()
        if self._writer is not None:
            self._writer.flush()
        out = {str(self._log_path): self._log_url}
        if self._tb_dir.is_dir():
            for path in self._tb_dir.rglob("*"):
                if path.is_file():
                    out[str(path)] = join_url(self._tb_url, path.relative_to(self._tb_dir).as_posix())
        return out

    def close(self, storage=None) -> None:
        """Close files; publish the mirror one last time when ``storage`` is given and the run dir is remote."""
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
