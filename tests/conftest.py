"""Shared fixtures: a real S3 endpoint (``moto_server`` over HTTP) for every test that touches ``s3://``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from padnet_dist.config.run import StorageConfig

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-access-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_SESSION_TOKEN": "testing-session-token",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    # keep a developer's real profile, config and endpoint out of the tests
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def _moto_server_executable() -> str | None:
    beside = Path(sys.executable).parent / "moto_server"
    return str(beside) if beside.exists() else shutil.which("moto_server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of a moto S3 server running for the whole session, with fake credentials in the environment."""
    exe = _moto_server_executable()
    if exe is None:
        reason = "moto_server not found (pip install 'moto[server]')"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start on {endpoint} (exit code {proc.poll()})")
                time.sleep(0.1)
        with pytest.MonkeyPatch.context() as mp:
            for name, value in FAKE_AWS_ENV.items():
                mp.setenv(name, value)
            mp.delenv("AWS_PROFILE", raising=False)
            mp.delenv("AWS_ENDPOINT_URL", raising=False)
            yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class S3Bucket:
    """A fresh bucket on the session's moto server."""

    endpoint_url: str
    bucket: str
    storage_cfg: StorageConfig

    def url(self, path: str = "") -> str:
        """``s3://{bucket}/{path}``."""
        return f"s3://{self.bucket}/{path.lstrip('/')}"

    def client(self):  # noqa: ANN201 - a boto3 client, for tests that inspect the server directly
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1")


@pytest.fixture
def s3(moto_endpoint: str) -> S3Bucket:
    """A fresh, empty bucket per test: ``s3.url("a/b")``, ``s3.storage_cfg``, ``s3.endpoint_url``."""
    fixture = S3Bucket(
        endpoint_url=moto_endpoint,
        bucket=f"test-{uuid.uuid4().hex[:16]}",
        storage_cfg=StorageConfig(endpoint_url=moto_endpoint),
    )
    fixture.client().create_bucket(Bucket=fixture.bucket)
    return fixture
