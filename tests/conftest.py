"""Shared fixtures: a real S3 endpoint (``moto_server`` over HTTP, ``tests.helpers.s3``) for every test that
touches ``s3://``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

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
