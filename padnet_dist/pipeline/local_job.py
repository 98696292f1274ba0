"""``python -m padnet_dist.pipeline.local_job JOB_DIR``: one job of the local backend (see ``local.py``).

Runs ``padnet-dist ARGV`` from ``JOB_DIR/spec.json`` as a child, passes SIGTERM and SIGINT on to it as SIGTERM,
and writes ``JOB_DIR/exit.json`` (exit code, start and end times) atomically when the child ends; a log bound for a
bucket is uploaded then. The child is SIGKILLed by the kernel if this runner dies first, so a lost runner never
leaves a job behind that a resubmission would run twice.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def main(job_dir: Path) -> int:
    from padnet_dist.launch.rank import PR_SET_PDEATHSIG
    from padnet_dist.pipeline.local import EXIT_FILE, STARTED_FILE, process_start_ticks, write_json

    spec = json.loads((job_dir / "spec.json").read_text())
    started_at = time.time()
    write_json(job_dir / STARTED_FILE, {"pid": os.getpid(), "start_ticks": process_start_ticks(os.getpid()),
                                        "started_at": started_at})  # fmt: skip
    print(f"== padnet-dist {' '.join(spec['argv'])}", flush=True)
    libc = ctypes.CDLL("libc.so.6", use_errno=True)  # loaded before the fork: the child only calls into it
    child = subprocess.Popen(
        [sys.executable, "-m", "padnet_dist.cli", *spec["argv"]],
        preexec_fn=lambda: libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL)),
    )

    def forward(_signum: int, _frame: object) -> None:
        try:
            child.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = child.wait()
    code = code if code >= 0 else 128 - code
    print(f"== exit code {code}", flush=True)
    if spec.get("log_url", "").startswith("s3://"):
        _upload_log(spec["log"], spec["log_url"], spec.get("storage") or {})
    write_json(job_dir / EXIT_FILE, {"exit_code": code, "started_at": started_at, "ended_at": time.time()})
    return code


def _upload_log(path: str, url: str, storage: dict) -> None:
    from padnet_dist.config.run import StorageConfig
    from padnet_dist.storage import storage_for

    try:
        sys.stdout.flush()
        storage_for(url, StorageConfig(**storage)).put_file(path, url)
    except Exception as e:  # the exit code matters more than the log copy
        print(f"could not upload the log to {url}: {e}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m padnet_dist.pipeline.local_job JOB_DIR")
    sys.exit(main(Path(sys.argv[1])))
