"""Ray Train through the Ray Jobs API on a real local Ray cluster: a killed worker, re-submission, both phases, a
node drained for preemption then a SIGTERM to a worker in one run, ending bitwise equal to an uninterrupted run.

The cluster is the session's ``ray_cluster`` (``tests/helpers/clusters.py``): a head and one worker node."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from padnet_dist.cli import main as cli_main
from padnet_dist.config import load_config
from padnet_dist.errors import UserError
from padnet_dist.storage import join_url, storage_for
from padnet_dist.train import checkpoint as ckpt
from padnet_dist.train import read_inference_checkpoint
from tests.helpers import REPO_ROOT
from tests.helpers.tiny_run import tiny_overrides, write_tiny_shards

JOB_TIMEOUT_S = 420


def _submit(client, *args: str, env: dict[str, str] | None = None) -> str:
    entrypoint = shlex.join(
        [sys.executable, "-m", "padnet_dist.cli", "ray-train", "--config", str(REPO_ROOT / "configs/tiny.yaml"), *args]
    )
    env_vars = {
        "OMP_NUM_THREADS": "1",  # 2 workers on 2 shared cores: one intra-op thread each
        "TORCH_EXTENSIONS_DIR": os.environ["TORCH_EXTENSIONS_DIR"],  # the compiled DeepSpeed op (tiny_run sets it)
        "PYTHONUNBUFFERED": "1",
        "RAY_DEDUP_LOGS": "0",  # keep each rank's lines in the job logs
        **(env or {}),
    }
    return client.submit_job(entrypoint=entrypoint, runtime_env={"env_vars": env_vars})


def _wait(client, job_id: str, started: float) -> tuple[dict, str]:
    from ray.job_submission import JobStatus

    while True:
        status = client.get_job_status(job_id)
        if status.is_terminal():
            break
        if time.monotonic() - started > JOB_TIMEOUT_S:
            client.stop_job(job_id)
            pytest.fail(f"job {job_id} still {status} after {JOB_TIMEOUT_S} s:\n{client.get_job_logs(job_id)[-4000:]}")
        time.sleep(1)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-6000:]
    print(f"job {job_id}: {time.monotonic() - started:.1f} s wall", file=sys.stderr)
    return json.loads([line for line in logs.splitlines() if line.startswith("{")][-1]), logs


@pytest.mark.integration
def test_two_phases_as_ray_jobs_with_a_worker_killed(ray_cluster, tmp_path):
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_cluster.dashboard)
    manifest = write_tiny_shards(str(tmp_path / "shards"))
    run_dir = str(tmp_path / "run")
    phase1_dir = ckpt.phase_dir(run_dir, 1)
    st = storage_for(run_dir)

    # Phase 1, 6 steps, a commit every 2; rank 1's worker is killed after the first commit: Ray restarts the
    # worker group (--max-failures 1) and run.resume=auto continues from our newest committed checkpoint.
    overrides = tiny_overrides(manifest, run_dir, "phases.phase1.epochs=5", "run.max_steps=6")
    started = time.monotonic()
    job = _submit(client, *overrides, "run.checkpoint_every_steps=2", "--num-workers", "2", "--max-failures", "1")
    victim = None
    while victim is None:  # the job's logs are read only once a commit exists: reading them costs the head CPU
        time.sleep(0.3)
        assert time.monotonic() - started < JOB_TIMEOUT_S, "no checkpoint was committed in time"
        if ckpt.list_committed(phase1_dir, st):
            pid = re.search(r"rank 1 of 2, .*pid (\d+), phase 1", client.get_job_logs(job))
            victim = int(pid.group(1)) if pid else None
        elif client.get_job_status(job).is_terminal():
            pytest.fail(f"phase 1 ended before its first commit:\n{client.get_job_logs(job)[-6000:]}")
    newest_step_at_kill = ckpt.list_committed(phase1_dir, st)[-1][0]
    os.kill(victim, signal.SIGKILL)
    print(
        f"\nrank 1 killed after the commit of step {newest_step_at_kill}, {time.monotonic() - started:.1f} s",
        file=sys.stderr,
    )
    p1, logs = _wait(client, job, started)

    assert p1["world_size"] == 2 and p1["step"] == 6
    resumed_step = int(re.fullmatch(r".*/step-(\d+)", p1["resumed_from"]).group(1))
    assert newest_step_at_kill <= resumed_step < 6  # nothing commits without rank 1, so nothing newer is lost
    assert ckpt.list_committed(phase1_dir, st)[-1] == (6, p1["checkpoint"])
    names = {p.name for p in Path(p1["checkpoint"]).iterdir()}
    assert {"loader-rank0.json", "loader-rank1.json", "rng-rank0.json", "rng-rank1.json", "trainer.json"} <= names
    for rank in (0, 1):
        assert re.search(rf"rank {rank} of 2, .*phase 1", logs), f"rank {rank} is missing from the job logs"
        lines = Path(run_dir, f"phase1/logs/rank{rank}.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in lines] == list(range(1, 7))  # redone steps logged once

    # The same command submitted again continues the run (here to a later max_steps)
    started = time.monotonic()
    more = _wait(client, _submit(client, *overrides, "run.max_steps=8", "--num-workers", "2"), started)[0]
    assert more["resumed_from"] == p1["checkpoint"] and more["step"] == 8

    # Phase 2 starts from phase 1's final checkpoint
    started = time.monotonic()
    p2, logs = _wait(client, _submit(client, *overrides, "phase=2", "run.max_steps=2", "--num-workers", "2"), started)
    assert p2["initialised_from"] == more["checkpoint"] and p2["resumed_from"] is None
    assert ckpt.list_committed(ckpt.phase_dir(run_dir, 2), st)[-1] == (2, p2["checkpoint"])
    assert re.search(r"rank 1 of 2, .*phase 2", logs)


def _records(run_dir: str, rank: int) -> list[dict]:
    path = Path(run_dir, f"phase1/logs/rank{rank}.jsonl")
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.endswith("}")]  # the last line may be half written


def _wait_for(what: str, condition, client, job: str, started: float, poll_s: float = 0.2):
    while not (found := condition()):
        if time.monotonic() - started > JOB_TIMEOUT_S:
            pytest.fail(f"{what}: not within {JOB_TIMEOUT_S} s:\n{client.get_job_logs(job)[-6000:]}")
        if client.get_job_status(job).is_terminal():
            pytest.fail(f"{what}: the job ended first:\n{client.get_job_logs(job)[-6000:]}")
        time.sleep(poll_s)
    return found


def _new_commit(phase_dir: str, st, after_step: int) -> tuple[int, float] | None:
    """``(step, commit time)`` of the newest committed checkpoint past ``after_step``, if one exists."""
    committed = [(s, u) for s, u in ckpt.list_committed(phase_dir, st) if s > after_step]
    if not committed:
        return None
    step, url = committed[-1]
    return step, json.loads(st.read_bytes(join_url(url, ckpt.COMMIT_MARKER)))["time"]


@pytest.mark.integration
def test_a_spot_reclaim_and_a_sigterm_each_commit_and_the_run_ends_bitwise_equal(ray_cluster, tmp_path):
    """A node drained for preemption and a SIGTERM to one worker process each stop every rank after its
    current step with a committed checkpoint; Ray restarts the group (a preemption, then a failure) and the
    run resumes there, ending with the weights of an uninterrupted run, bit for bit."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_cluster.dashboard)
    manifest = write_tiny_shards(str(tmp_path / "shards"))
    # 32 steps (2 ranks, 4 steps per epoch, 8 epochs), no periodic checkpoint: a commit before the end can only
    # come from the stop; Ray Train polls drains every 0.5 s instead of every 5 s to keep the test short.
    common = ("phases.phase1.epochs=8", "run.checkpoint_every_steps=0")
    env = {"RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S": "0.5"}

    started = time.monotonic()
    straight_dir = str(tmp_path / "straight")
    straight = _wait(client, _submit(client, *tiny_overrides(manifest, straight_dir, *common), "--num-workers", "2",
                                     env=env), started)[0]  # fmt: skip
    assert straight["finished"] and straight["step"] == 32 and straight["resumed_from"] is None

    run_dir = str(tmp_path / "run")
    phase_dir, st = ckpt.phase_dir(run_dir, 1), storage_for(run_dir)
    started = time.monotonic()
    job = _submit(client, *tiny_overrides(manifest, run_dir, *common), "--num-workers", "2", "--max-failures", "1",
                  "--max-preemption-failures", "1", env=env)  # fmt: skip

    # 1. A spot reclaim: the worker node is drained with a deadline, then goes away; a new node replaces it.
    _wait_for("training", lambda: len(_records(run_dir, 0)) >= 2, client, job, started)
    (node_id,) = ray_cluster.alive_worker_node_ids()
    (old_node,) = ray_cluster.worker_nodes
    drain_deadline_s = 10
    drain_requested_at = time.time()
    ray_cluster.drain_for_preemption(node_id, drain_deadline_s)
    drained_at = time.time()  # the drain is in force once the command returns
    step1, commit1_at = _wait_for(
        "a commit after the drain", lambda: _new_commit(phase_dir, st, 0), client, job, started
    )
    print(
        f"\ndrain -> committed step {step1}: {commit1_at - drained_at:.1f} s after `ray drain-node` returned "
        f"({commit1_at - drain_requested_at:.1f} s after it was started)",
        file=sys.stderr,
    )
    ray_cluster.add_worker_node()  # the autoscaler's replacement
    time.sleep(max(0.0, drain_requested_at + drain_deadline_s - time.time()))
    ray_cluster.reclaim(old_node)

    # 2. A SIGTERM to rank 1's process in the restarted group, once that group trains again.
    _wait_for("training after the restart", lambda: any(r["step"] > step1 for r in _records(run_dir, 1)),
              client, job, started)  # fmt: skip
    first_pid = int(re.search(r"rank 1 of 2, .*pid (\d+), phase 1", client.get_job_logs(job)).group(1))

    def restarted_rank1_pid() -> int | None:
        pids = [int(p) for p in re.findall(r"rank 1 of 2, .*pid (\d+), phase 1", client.get_job_logs(job))]
        return next((p for p in pids if p != first_pid), None)

    pid = _wait_for("rank 1 of the restarted group in the logs", restarted_rank1_pid, client, job, started)
    signalled_at = time.time()
    os.kill(pid, signal.SIGTERM)
    step2, commit2_at = _wait_for("a commit after SIGTERM", lambda: _new_commit(phase_dir, st, step1),
                                  client, job, started)  # fmt: skip
    print(f"SIGTERM -> committed step {step2}: {commit2_at - signalled_at:.1f} s", file=sys.stderr)

    result, logs = _wait(client, job, started)
    notice = re.search(r"rank 0: committed step (\d+) ([\d.]+) s after the stop notice", logs)
    print(f"preemption notice seen by rank 0 -> committed step {notice[1]}: {notice[2]} s", file=sys.stderr)
    assert step1 < step2 < 32
    assert result["finished"] and result["step"] == 32
    assert result["resumed_from"] == ckpt.checkpoint_url(phase_dir, step2)
    assert "Source: preemption" in logs  # Ray counted the reclaim against max_preemption_failures
    assert "preemption notice for ranks" in logs and "rank 1: SIGTERM: committing after this step" in logs
    # Ray's Result follows our commits: the final one, with its metrics
    assert result["ray_result"]["checkpoint"] == result["checkpoint"]
    assert result["ray_result"]["metrics"]["step"] == 32
    assert [r["step"] for r in _records(run_dir, 0)] == list(range(1, 33))  # each step once, as the weights saw it

    _, want = read_inference_checkpoint(straight["checkpoint"])
    _, got = read_inference_checkpoint(result["checkpoint"])
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), f"{key} differs from the uninterrupted run"


def test_world_from_ray_context_maps_ranks_and_nodes():
    from ray.train.v2.api.context import LocalTrainContext

    from padnet_dist.launch.ray_train import world_from_ray_context

    context = LocalTrainContext("t", world_size=6, world_rank=5, local_rank=2, local_world_size=3, node_rank=1)
    world = world_from_ray_context(context, environ={"MASTER_ADDR": "10.0.0.7", "MASTER_PORT": "29611"})
    assert (world.rank, world.local_rank, world.world_size, world.node_rank, world.num_nodes) == (5, 2, 6, 1, 2)
    assert (world.master_addr, world.master_port) == ("10.0.0.7", 29611)
    assert not world.is_main


def test_relative_inputs_become_absolute_and_a_relative_run_dir_is_refused(tmp_path):
    from padnet_dist.launch.ray_train import prepare_config

    (tmp_path / "shards").mkdir()
    (tmp_path / "shards/train.manifest.json").write_text("{}")
    cfg = load_config(
        REPO_ROOT / "configs/tiny.yaml", [f"run.dir={tmp_path}/run", "data.train_manifest=shards/train.manifest.json"]
    )
    prepared = prepare_config(cfg, cwd=str(tmp_path))
    assert prepared.data.train_manifest == str(tmp_path / "shards/train.manifest.json")
    assert prepared.run.dir == cfg.run.dir
    with pytest.raises(UserError, match="run.dir=runs/x is relative"):
        prepare_config(load_config(REPO_ROOT / "configs/tiny.yaml", ["run.dir=runs/x"]), cwd=str(tmp_path))


def test_ray_run_record_goes_to_an_s3_compatible_store(s3):
    from padnet_dist.launch.ray_train import ray_storage

    path, filesystem = ray_storage(s3.url("runs/a/ray"), s3.storage_cfg)
    assert path == f"{s3.bucket}/runs/a/ray"
    with filesystem.open_output_stream(f"{path}/phase1/marker") as out:
        out.write(b"ok")
    assert s3.client().get_object(Bucket=s3.bucket, Key="runs/a/ray/phase1/marker")["Body"].read() == b"ok"


def test_bad_arguments_fail_in_one_line_before_any_cluster_is_contacted(tmp_path, capsys):
    args = ["ray-train", "--config", str(REPO_ROOT / "configs/tiny.yaml"), f"run.dir={tmp_path}/run"]
    assert cli_main([*args, "--num-workers", "0"]) == 2
    assert capsys.readouterr().err.strip().endswith("--num-workers 0: give at least 1 worker")
    assert cli_main([*args, "engine.device=cuda", "--num-workers", "2"]) == 2
    assert "add --use-gpu" in capsys.readouterr().err
    assert cli_main([*args[:3], "run.dir=runs/rel", "--num-workers", "2"]) == 2
    assert "is relative" in capsys.readouterr().err
    assert cli_main([*args, "--num-workers", "2", "--max-preemption-failures", "-2"]) == 2
    assert "--max-preemption-failures -2: give -1 (no limit), 0 or more" in capsys.readouterr().err
    # a restarted group must continue from its own commits, not from a fixed checkpoint again
    assert cli_main([*args, "run.resume=never", "--num-workers", "2"]) == 2
    assert "use run.resume=auto, or --max-failures 0 --max-preemption-failures 0" in capsys.readouterr().err
