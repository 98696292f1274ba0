"""One driver per sweep, and the detached driver's command line; no jobs run here (the clusters' tests run them)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from padnet_dist.cli import _parse
from padnet_dist.commands import sweep as sweep_command
from padnet_dist.errors import UserError
from padnet_dist.pipeline.lease import LeaseHeld, acquire, read_lease
from padnet_dist.sweep.detach import absolute_run_dir, sweep_argv
from padnet_dist.sweep.plan import plan_runs
from padnet_dist.sweep.rows import rows_of
from padnet_dist.sweep.runner import drive_runs
from padnet_dist.sweep.sweep import run_sweep
from tests.helpers import REPO_ROOT
from tests.helpers.tiny_sweep import ROWS

BASE = ["configs/tiny.yaml"]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # the presets' relative paths, as a user runs the command


def _runs(sweep_dir: Path):
    rows = rows_of([Path(r) for r in ROWS])
    return plan_runs(rows, seeds=[0], base_configs=BASE, overrides=[f"run.dir={sweep_dir}"], sweep_dir=str(sweep_dir))


def test_a_second_driver_of_a_sweep_is_refused_in_one_line(tmp_path):
    sweep_dir = tmp_path / "sweep"
    first, second = _runs(sweep_dir)
    held = acquire(second.run_dir, ttl_s=60)  # another live coordinator drives the second row's run
    try:
        for detached in (False, True):
            with pytest.raises(UserError) as refused:
                run_sweep(table="2", row_files=ROWS, config_files=BASE, overrides=[f"run.dir={sweep_dir}"],
                          backend="local", num_seeds=1, parallel=None, detached=detached)  # fmt: skip
            message = str(refused.value)
            assert "\n" not in message and message.startswith("t2_c_sp/seed0 of the sweep")
            assert f"padnet-dist status {second.run_dir}" in message and f"pid {os.getpid()}" in message
        assert not (sweep_dir / "logs").exists() and not Path(first.run_dir, "pipeline.json").exists()  # nothing ran

        # A lease taken after that check (a race): the runs this driver opened are released before it stops.
        with pytest.raises(LeaseHeld):
            drive_runs([first, second], backend="local", parallel=0, poll_every_s=0.1)
        assert Path(first.run_dir, "pipeline.json").exists() and read_lease(first.run_dir) is None
        assert read_lease(second.run_dir)["token"] == held.token
    finally:
        held.release()


def test_the_detached_driver_runs_the_same_sweep_in_the_foreground():
    parser = argparse.ArgumentParser()
    sweep_command.add_arguments(parser)
    overrides = ["run.dir=s3://b/sweeps/t2", "data.seed=3", "pipeline.slurm_args=[--time=60]"]
    argv = sweep_argv(table="2", row_files=ROWS, config_files=["configs/nyud.yaml"], overrides=overrides,
                      backend="slurm", num_seeds=3, parallel=4)  # fmt: skip
    assert argv[0] == "sweep"
    args = _parse(parser, list(argv[1:]))
    rows, parsed_overrides = sweep_command.split_rows(args.rows, args.overrides)
    assert (args.table, rows, args.config, parsed_overrides) == ("2", ROWS, ["configs/nyud.yaml"], overrides)
    assert (args.seeds, args.parallel, args.backend, args.no_detach, args.detach) == (3, 4, "slurm", True, False)


def test_a_relative_run_dir_is_made_absolute_for_ray_jobs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_run_dir(["a=1", "run.dir=runs/s"], "runs/s") == ["a=1", f"run.dir={tmp_path}/runs/s"]
    assert absolute_run_dir(["run.dir=s3://b/s"], "s3://b/s") == ["run.dir=s3://b/s"]
    assert absolute_run_dir(["run.dir=/abs/s"], "/abs/s") == ["run.dir=/abs/s"]
