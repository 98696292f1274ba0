"""The run's lease: one coordinator per run; the second names the holder; an expired or dead holder's lease is
taken over; on S3 by conditional writes against a real (moto) endpoint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from padnet_dist.pipeline.lease import LeaseHeld, LeaseLost, acquire, lease_url, read_lease


@pytest.fixture(params=["local", "s3"])
def run_dir(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "run"), None
    s3 = request.getfixturevalue("s3")
    return s3.url("runs/r"), s3.storage_cfg


def _holder_process(run_dir: str, storage_cfg, ttl_s: float) -> subprocess.Popen:
    """Another coordinator: a process that takes the lease and keeps it until killed."""
    endpoint = storage_cfg.endpoint_url if storage_cfg else ""
    code = (
        "import sys, time\n"
        "from padnet_dist.config import StorageConfig\n"
        "from padnet_dist.pipeline.lease import acquire\n"
        f"acquire({run_dir!r}, {ttl_s}, StorageConfig(endpoint_url={endpoint!r}))\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_coordinator_is_refused_with_the_holders_identity_and_since_when(run_dir):
    url, cfg = run_dir
    holder = _holder_process(url, cfg, ttl_s=60)
    try:
        with pytest.raises(LeaseHeld) as info:
            acquire(url, 60, cfg)
        message = str(info.value)
        assert f"pid {holder.pid}" in message and socket.gethostname() in message and "since 20" in message
        assert "\n" not in message
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_holder_on_this_host_and_an_expired_lease_are_taken_over(run_dir):
    url, cfg = run_dir
    holder = _holder_process(url, cfg, ttl_s=60)
    holder.kill()
    holder.wait()
    lease = acquire(url, 60, cfg)  # the holder's pid is gone: no need to wait for expiry
    assert read_lease(url, cfg)["token"] == lease.token
    # a lease held by a live process elsewhere is taken only once expired
    lease.ttl_s = 0.5
    lease.heartbeat()
    other = read_lease(url, cfg)
    assert other["holder"]["pid"] == os.getpid()
    time.sleep(0.6)
    taker = acquire(url, 60, cfg)
    assert read_lease(url, cfg)["token"] == taker.token
    with pytest.raises(LeaseLost, match="taken over"):
        lease.heartbeat()  # the old holder learns it lost the run and stops
    taker.release()
    assert read_lease(url, cfg) is None


def test_heartbeat_extends_the_lease_and_release_frees_it(run_dir):
    url, cfg = run_dir
    lease = acquire(url, 30, cfg)
    before = read_lease(url, cfg)
    time.sleep(0.05)
    lease.heartbeat()
    after = read_lease(url, cfg)
    assert after["expires"] > before["expires"] and after["since"] == before["since"]
    lease.release()
    acquire(url, 30, cfg).release()


def test_of_coordinators_racing_for_an_expired_lease_exactly_one_wins(run_dir):
    url, cfg = run_dir
    stale = acquire(url, 0.01, cfg)
    time.sleep(0.05)
    won, refused = [], []

    def contend() -> None:
        try:
            won.append(acquire(url, 60, cfg).token)
        except LeaseHeld:
            refused.append(1)

    threads = [threading.Thread(target=contend) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 5
    assert read_lease(url, cfg)["token"] == won[0] != stale.token


def test_the_lease_lives_in_the_run_dir(tmp_path):
    lease = acquire(str(tmp_path / "run"), 30)
    data = json.loads((tmp_path / "run" / "pipeline.lease").read_text())
    assert lease_url(str(tmp_path / "run")).endswith("run/pipeline.lease")
    assert set(data) == {"holder", "since", "expires", "token"} and set(data["holder"]) == {"host", "pid", "user"}
    assert data["token"] == lease.token
