"""Real clusters on this host that the integration tests share: a two-node Slurm cluster (``cluster/slurm_local``)
and a Ray cluster (a head with the dashboard and Jobs API, plus worker nodes). ``tests/conftest.py`` starts each
once per session, on first use, as the fixtures ``slurm_cluster`` and ``ray_cluster``.

Under ``CI=true`` a cluster that cannot start fails the test; elsewhere it skips it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from padnet_dist.launch.env import free_port

RAY = Path(sys.executable).parent / "ray"
HEAD_START_TIMEOUT_S = 120


def unavailable(reason: str) -> None:
    """Skip, or under ``CI=true`` fail: a missing real component never passes silently in CI."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _session_processes(sid: int) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                found.append(p)
        except (OSError, psutil.Error):
            pass
    return found


def _stop_session(leader: subprocess.Popen, sig: signal.Signals = signal.SIGTERM) -> None:
    """Stop every process of ``leader``'s own session, by pid (``ray stop`` would stop every Ray on the host).

    A `ray start` node's raylet, agents and workers all stay in the session its ``start_new_session`` began.
    """
    procs = _session_processes(leader.pid)
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=15)
    if leader.poll() is None:
        leader.kill()
    leader.wait()


class LocalRayCluster:
    """A real Ray cluster on this host: a head with the dashboard (1 CPU) and worker nodes (1 CPU each).

    Two Ray Train workers of 1 CPU land one on the head and one on the worker node, so a worker node can be
    drained and reclaimed as a cloud provider would reclaim a spot instance. Each node is a ``ray start
    --block`` in its own session, stopped by its processes' ids.
    """

    def __init__(self) -> None:
        # Ray's socket paths must stay under ~107 characters: a short temp dir, not pytest's tmp_path
        self.temp_dir = tempfile.mkdtemp(prefix="pdray-", dir="/tmp")
        self.gcs_address = f"127.0.0.1:{free_port()}"
        self.dashboard = f"http://127.0.0.1:{free_port()}"
        self.head: subprocess.Popen | None = None
        self.worker_nodes: list[subprocess.Popen] = []
        self._logs: list = []

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        cmd = [str(RAY), "start", "--block", "--num-cpus", "1", "--disable-usage-stats", "--temp-dir", self.temp_dir]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        # Ray's memory monitor kills workers when the host's memory is 95% used, by anyone: on a shared test host
        # other processes' memory would kill our jobs. The kernel's OOM killer still guards the host.
        env["RAY_memory_monitor_refresh_ms"] = "0"
        log = open(Path(self.temp_dir) / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        return subprocess.Popen([*cmd, *args], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def start_head(self) -> None:
        started = time.monotonic()
        self.head = self._start(
            "head", "--head", "--port", self.gcs_address.split(":")[1], "--include-dashboard", "true",
            "--dashboard-host", "127.0.0.1", "--dashboard-port", self.dashboard.rsplit(":", 1)[1],
            "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
        )  # fmt: skip
        while True:
            try:
                with urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.head.poll() is not None or time.monotonic() - started > HEAD_START_TIMEOUT_S:
                tail = (Path(self.temp_dir) / "head.log").read_text(errors="replace")[-2000:]
                unavailable(f"the Ray head did not start (exit code {self.head.poll()}): {tail}")
            time.sleep(0.5)
        print(f"\nRay head up in {time.monotonic() - started:.1f} s", file=sys.stderr)

    def alive_worker_node_ids(self) -> list[str]:
        from ray.util.state import list_nodes

        return [n.node_id for n in list_nodes(address=self.dashboard) if not n.is_head_node and n.state == "ALIVE"]

    def add_worker_node(self) -> subprocess.Popen:
        """One more worker node (a second raylet on this host); returns once Ray lists it alive."""
        before = set(self.alive_worker_node_ids())
        # its own agent port, as every node of a real cluster serves its jobs' logs: with the default one, taken on
        # this shared host, the head could not read the log of a job whose driver ran on this node
        node = self._start(f"worker{len(self.worker_nodes)}", "--address", self.gcs_address,
                           "--dashboard-agent-listen-port", str(free_port()))  # fmt: skip
        self.worker_nodes.append(node)
        started = time.monotonic()
        while not set(self.alive_worker_node_ids()) - before:
            if node.poll() is not None or time.monotonic() - started > HEAD_START_TIMEOUT_S:
                pytest.fail(f"the Ray worker node did not join (exit code {node.poll()})")
            time.sleep(0.5)
        return node

    def drain_for_preemption(self, node_id: str, deadline_s: int) -> None:
        """What a cloud autoscaler does on a spot reclaim notice: drain the node with a deadline."""
        subprocess.run(
            [str(RAY), "drain-node", "--address", self.gcs_address, "--node-id", node_id,
             "--reason", "DRAIN_NODE_REASON_PREEMPTION", "--reason-message", "spot instance reclaim (test)",
             "--deadline-remaining-seconds", str(deadline_s)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def reclaim(self, node: subprocess.Popen) -> None:
        """The instance goes away: every process of the node dies at once (Ray itself never kills a drained node)."""
        _stop_session(node, signal.SIGKILL)
        self.worker_nodes.remove(node)

    def stop(self) -> None:
        for node in [*self.worker_nodes, *([self.head] if self.head else [])]:
            _stop_session(node)
        for log in self._logs:
            log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
