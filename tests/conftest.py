"""Shared fixtures: a real S3 endpoint (``moto_server`` over HTTP, ``tests.helpers.s3``) for every test that
touches ``s3://``; a real two-node Slurm cluster and a real Ray cluster (``tests.helpers.clusters``), each started
once per session on first use and shared by ``tests/cluster`` and ``tests/pipeline``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.slurm_local.cluster import ClusterError, LocalSlurmCluster, missing_requirements
from tests.helpers.clusters import RAY, LocalRayCluster, unavailable
from tests.helpers.s3 import FAKE_AWS_ENV, MotoServer, S3Bucket, moto_server_executable, new_bucket

# Subprocesses (ranks, Slurm jobs, Ray workers) find this venv's tools first, as under `make test`: DeepSpeed builds
# its CPU op with the ninja on PATH, and a second ninja would rebuild the cached build every time.
os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of a moto S3 server running for the whole session, with fake credentials in the environment."""
    if moto_server_executable() is None:
        reason = "moto_server not found (pip install 'moto[server]')"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    server = MotoServer()
    try:
        endpoint = server.start()
    except RuntimeError as e:
        pytest.fail(str(e))
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in FAKE_AWS_ENV.items():
                mp.setenv(name, value)
            mp.delenv("AWS_PROFILE", raising=False)
            mp.delenv("AWS_ENDPOINT_URL", raising=False)
            yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3(moto_endpoint: str) -> S3Bucket:
    """A fresh, empty bucket per test: ``s3.url("a/b")``, ``s3.storage_cfg``, ``s3.endpoint_url``."""
    return new_bucket(moto_endpoint)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A two-node Slurm cluster (n1, n2, 3 CPUs each) on this host; /etc/hosts is as before once it stops."""
    reason = missing_requirements()
    if reason:
        unavailable(f"local Slurm cluster: {reason}")
    hosts_before = Path("/etc/hosts").read_text()
    cluster = LocalSlurmCluster(num_cpus_per_node=3)
    try:
        cluster.start()
    except ClusterError as e:
        unavailable(f"local Slurm cluster: did not start: {e}")
    print(f"local Slurm cluster up in {cluster.start_s:.1f} s")
    yield cluster
    cluster.stop()
    assert Path("/etc/hosts").read_text() == hosts_before


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[LocalRayCluster]:
    """A real Ray head (dashboard and Jobs API) and one worker node, each in its own session."""
    if not RAY.exists():
        unavailable(f"{RAY} is missing: pip install 'ray[default]'")
    cluster = LocalRayCluster()
    try:
        cluster.start_head()
        cluster.add_worker_node()
        yield cluster
    finally:
        cluster.stop()
