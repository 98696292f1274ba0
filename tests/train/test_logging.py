"""What a user reads of a run: the resolved config, plain progress lines in job logs, strict JSON log lines, and
logs of an ``s3://`` run dir published on a timer (not only with checkpoints)."""

from __future__ import annotations

import io
import json
import math
import time

import pytest

from padnet_dist.config import load_config, to_yaml
from padnet_dist.storage import storage_for
from padnet_dist.storage.url import join_url, local_path
from padnet_dist.train import train
from padnet_dist.train.logging import RunLogger
from padnet_dist.world import World

RECORD = {"step": 5, "epoch": 0, "total": 1.5, "semantic": 1.25, "depth": 0.25, "lr": 0.001, "samples_per_s": 40.0,
          "data_wait_s": 0.05, "compute_s": 0.15, "num_corrupt_skipped": 0, "time": 0.0}  # fmt: skip


def _strict(line: str) -> dict:
    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(line, parse_constant=refuse)


def _logger(phase_dir_url: str, storage, **kwargs) -> RunLogger:
    args = {"world": World(), "tensorboard": False, "progress_bar": True, "total_steps": 10, "initial_step": 0,
            "description": "phase 1", **kwargs}  # fmt: skip
    return RunLogger(phase_dir_url=phase_dir_url, storage=storage, **args)


def test_progress_is_a_plain_line_per_logged_step_when_output_is_not_a_terminal(tmp_path) -> None:
    stream = io.StringIO()  # what Slurm and Ray job logs are: not a TTY
    logger = _logger(str(tmp_path / "phase1"), storage_for(str(tmp_path)), stream=stream)
    logger.log(RECORD)
    logger.advance()
    logger.log({"step": 6, "val/depth/rmse": 1.0})  # an evaluation record: no progress line
    logger.close()
    out = stream.getvalue()
    assert "\r" not in out
    (line,) = out.splitlines()
    assert line.startswith("phase 1 step 5/10 (50.0%) | eta ")
    assert "loss total 1.5 semantic 1.25 depth 0.25 |" in line
    assert "lr 0.001 |" in line and "40.0 samples/s/rank" in line and line.endswith("data wait 25%")


def test_no_progress_when_progress_bar_is_off(tmp_path) -> None:
    stream = io.StringIO()
    logger = _logger(str(tmp_path / "phase1"), storage_for(str(tmp_path)), stream=stream, progress_bar=False)
    logger.log(RECORD)
    logger.close()
    assert stream.getvalue() == ""


def test_log_lines_are_strict_json_with_nan_and_inf_as_null(tmp_path) -> None:
    logger = _logger(str(tmp_path / "phase1"), storage_for(str(tmp_path)), stream=io.StringIO())
    logger.log({**RECORD, "total": math.nan, "depth": math.inf})
    logger.close()
    (line,) = (tmp_path / "phase1/logs/rank0.jsonl").read_text().splitlines()
    record = _strict(line)
    assert record["total"] is None and record["depth"] is None and record["semantic"] == 1.25


def test_logs_of_an_s3_run_dir_are_published_on_a_timer(s3) -> None:
    phase_dir = s3.url("run/phase1")
    storage = storage_for(phase_dir, s3.storage_cfg)
    logger = _logger(phase_dir, storage, tensorboard=True, stream=io.StringIO(), upload_every_s=0.2)
    try:
        logger.log(RECORD)
        log_url = join_url(phase_dir, "logs", "rank0.jsonl")
        deadline = time.monotonic() + 20
        while not (storage.exists(log_url) and storage.read_bytes(log_url)) and time.monotonic() < deadline:
            time.sleep(0.1)
        # published with no checkpoint and no close: by the timer alone
        assert _strict(storage.read_bytes(log_url).decode().splitlines()[0])["step"] == 5
        assert any("/tensorboard/" in url for url in storage.list(phase_dir))
    finally:
        logger.close(storage)


def test_a_run_prints_its_resolved_config_and_saves_it_beside_the_logs(tiny_cfg, tmp_path, capsys) -> None:
    cfg = tiny_cfg("run.max_steps=2", "run.progress_bar=true", run_dir=str(tmp_path / "run"))
    train(cfg, World(master_port=_free_port()))
    err = capsys.readouterr().err
    saved_url = join_url(cfg.run.dir, "phase1", "logs", "config.yaml")
    saved = open(local_path(saved_url), encoding="utf-8").read()
    assert saved == to_yaml(cfg)
    assert load_config(local_path(saved_url)) == cfg  # the saved file reproduces the run's config
    assert f"resolved config (saved to {saved_url}):\n{saved}" in err
    assert "phase 1 step 2/2 (100.0%)" in err  # capsys is not a terminal: plain progress lines


def test_step_records_carry_the_data_wait_share_and_the_all_reduce_time(tiny_cfg, tmp_path) -> None:
    cfg = tiny_cfg("run.max_steps=2", "engine.comm_timing=true", run_dir=str(tmp_path / "run"))
    train(cfg, World(master_port=_free_port()))
    log = local_path(join_url(cfg.run.dir, "phase1", "logs", "rank0.jsonl"))
    records = [json.loads(line) for line in open(log, encoding="utf-8")]
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert r["data_wait_share"] == pytest.approx(r["data_wait_s"] / (r["data_wait_s"] + r["compute_s"]))
        assert 0.0 <= r["comm_s"] <= r["compute_s"]  # one rank: DeepSpeed skips the all-reduce, ~0 s
        assert "max_memory_gb" not in r and "mfu" not in r  # GPU-only figures


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _no_stray_threads():
    import threading

    before = {t.name for t in threading.enumerate()}
    yield
    assert "padnet-log-upload" not in {t.name for t in threading.enumerate()} - before  # close() ends the uploader
