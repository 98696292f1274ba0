"""Shared fixtures: a real S3 endpoint (``moto_server`` over HTTP) for every test that touches ``s3://``."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from padnet_dist.config.run import StorageConfig
from padnet_dist.storage.local_s3 import LocalS3Server, moto_server_executable

# Subprocesses (ranks, Slurm jobs, Ray workers) find this venv's tools first, as under `make test`: DeepSpeed builds
# its CPU op with the ninja on PATH, and a second ninja would rebuild the cached build every time.
os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])

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


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of a moto S3 server running for the whole session, with fake credentials in the environment."""
    if moto_server_executable() is None:
        reason = "moto_server not found (pip install 'moto[server]')"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    server = LocalS3Server()
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
