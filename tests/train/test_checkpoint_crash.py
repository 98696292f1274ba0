"""A training process SIGKILLed in the middle of a checkpoint upload to S3 (moto_server): the next run resumes from
the previous committed checkpoint, aborts the unfinished multipart upload at its start, and its prune removes the
partial checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from padnet_dist.launch.env import free_port
from padnet_dist.storage import storage_for
from padnet_dist.train import checkpoint as ckpt
from padnet_dist.train import train
from padnet_dist.world import World
from tests.helpers import REPO_ROOT
from tests.helpers.tiny_run import tiny_overrides


def _unfinished_uploads(s3, prefix: str) -> list[str]:
    uploads = s3.client().list_multipart_uploads(Bucket=s3.bucket, Prefix=prefix).get("Uploads", [])
    return [u["Key"] for u in uploads]


def _step_dirs(phase_dir: str, st) -> dict[int, bool]:
    return {step: committed for step, _, committed in ckpt._list_step_dirs(phase_dir, st)}


def test_sigkill_mid_upload_resumes_from_the_previous_commit_and_cleans_up(s3, tiny_manifest, tiny_cfg):
    run_dir = s3.url("runs/crash")
    phase_dir = ckpt.phase_dir(run_dir, 1)
    prefix = "runs/crash/phase1/checkpoints/"
    # 5 MiB parts: the ~95 MB engine file of each checkpoint goes up as a multipart upload of about 19 parts
    storage_args = (f"storage.endpoint_url={s3.endpoint_url}", "storage.multipart_threshold_mb=5")
    overrides = tiny_overrides(tiny_manifest, run_dir, *storage_args, "run.checkpoint_every_steps=1",
                               "phases.phase1.epochs=4", "run.keep_last=2")  # fmt: skip
    command = [sys.executable, "-m", "padnet_dist.cli", "train", "--config", "configs/tiny.yaml", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    st = storage_for(run_dir, s3.storage_cfg)
    try:
        deadline = time.monotonic() + 600
        while True:  # a checkpoint is committed and a newer one is being uploaded: kill the trainer there
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint upload seen in time"
            uploading = _unfinished_uploads(s3, prefix)
            if uploading and ckpt.list_committed(phase_dir, st):
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()

    assert proc.returncode == -signal.SIGKILL
    previous_step, previous_url = ckpt.list_committed(phase_dir, st)[-1]
    left = _unfinished_uploads(s3, prefix)
    assert left, "the kill came after the upload had finished"
    partial_steps = [s for s, committed in _step_dirs(phase_dir, st).items() if not committed]
    assert partial_steps and min(partial_steps) > previous_step  # the killed checkpoint's small files, no marker

    # the next run: same run dir, run.resume=auto; it commits only at its end, after the partial step
    stop_at = max(partial_steps) + 1
    resumed = train(tiny_cfg(*storage_args, "run.checkpoint_every_steps=0", "phases.phase1.epochs=4",
                             "run.keep_last=2", f"run.max_steps={stop_at}", run_dir=run_dir),
                    World(master_port=free_port()))  # fmt: skip
    assert resumed["resumed_from"] == previous_url and resumed["step"] == stop_at
    assert _unfinished_uploads(s3, prefix) == []  # aborted at the start
    assert _step_dirs(phase_dir, st) == {previous_step: True, stop_at: True}  # the partial one was pruned
