"""``padnet-dist status RUN_DIR``: the run's jobs as the coordinator last recorded them, and their latest metrics.

Reads ``pipeline.json`` and the lease; for a training job also the last line of its phase's ``logs/rank0.jsonl``
(step, epoch, loss, throughput). Never asks the backend, so it works anywhere the run directory is readable.
"""

from __future__ import annotations

import json
import time
from typing import Any

from padnet_dist.config import StorageConfig
from padnet_dist.errors import UserError
from padnet_dist.pipeline.lease import describe, read_lease
from padnet_dist.pipeline.state import load_state, state_url
from padnet_dist.storage import join_url, storage_for

HEADLINE = (("semantic", "miou"), ("semantic", "pixel_acc"), ("depth", "rel"), ("depth", "delta1"))
TRAINING_KEYS = ("step", "epoch", "total", "samples_per_s")


def run_status(run_dir: str, storage_cfg: StorageConfig | None = None) -> dict[str, Any]:
    """``pipeline.json`` plus, per job, ``duration_s``, ``retries`` and ``latest`` (metrics), and the ``lease``."""
    storage = storage_for(run_dir, storage_cfg)
    state = load_state(run_dir, storage)
    if state is None:
        raise UserError(f"{state_url(run_dir)} does not exist: is {run_dir} a run of `padnet-dist pipeline`?")
    now = time.time()
    for rec in state["jobs"].values():
        start, end = rec.get("started_at"), rec.get("ended_at")
        rec["duration_s"] = None if start is None else (end or now) - start
        rec["retries"] = max(0, rec.get("attempts", 0) - 1)
        if rec.get("kind") == "eval":
            rec["latest"] = {f"{s}.{k}": rec.get("metrics", {}).get(s, {}).get(k) for s, k in HEADLINE
                             if k in rec.get("metrics", {}).get(s, {})}  # fmt: skip
        elif rec.get("kind") == "train":
            rec["latest"] = _last_log_line(join_url(rec["phase_dir"], "logs", "rank0.jsonl"), storage)
    state["lease"] = read_lease(run_dir, storage_cfg)
    return state


def format_status(status: dict[str, Any]) -> str:
    lines = [f"run {status['run_dir']} ({status['backend']} backend)"]
    lease = status.get("lease")
    lines.append(f"coordinator: {describe(lease)}" if lease else "coordinator: none holds the run")
    shared = status.get("phase1_from")
    if shared:
        detail = shared.get("checkpoint") or shared.get("reason") or "its phase 1 and evaluations have not ended"
        lines.append(f"phase 1 from {shared['run_dir']}: {shared['state']} ({detail})")
    rows = [("job", "state", "backend id", "duration", "retries", "latest")]
    ordered = sorted(status["jobs"].items(), key=lambda item: (item[1].get("submitted_at") or 0, item[0]))
    for name, rec in ordered:  # in the order they were submitted
        latest = " ".join(f"{k}={_fmt(v)}" for k, v in (rec.get("latest") or {}).items())
        duration = "" if rec["duration_s"] is None else f"{rec['duration_s']:.0f} s"
        rows.append((name, rec["state"], rec.get("backend_id") or "", duration, str(rec["retries"]), latest))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5] for r in rows]
    best = status.get("best")
    if best:
        lines.append(f"best: {best['metric']} {_fmt(best['value'])} (phase {best['phase']}) at {best['checkpoint']}")
    return "\n".join(line.rstrip() for line in lines)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _last_log_line(url: str, storage) -> dict[str, Any]:
    try:
        text = storage.read_bytes(url).decode(errors="replace")
    except FileNotFoundError:
        return {}
    for line in reversed(text.splitlines()):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written
        return {k: record[k] for k in TRAINING_KEYS if k in record}
    return {}
