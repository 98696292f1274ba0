"""The one throwaway S3 endpoint of the tests and benchmarks: ``moto_server`` (from ``moto[server]``) on loopback.

Real HTTP, real boto3 / pyarrow clients: only the server is in memory. Not for data anyone wants to keep.
The separate ``moto_server`` process is kept rather than ``moto.server.ThreadedMotoServer``: a server thread inside
the pytest process would share its GIL with the test's own decoding and training work (and stop with it), while
rank, Slurm and Ray subprocesses of the integration tests reach a separate process the same way a real endpoint is
reached. ``tests/conftest.py`` turns this into the ``moto_endpoint`` and ``s3`` fixtures.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def moto_server_executable() -> str | None:
    """The ``moto_server`` beside this interpreter (a venv), else on PATH; None when not installed."""
    beside = Path(sys.executable).parent / "moto_server"
    return str(beside) if beside.exists() else shutil.which("moto_server")


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """``with MotoServer() as endpoint_url: ...`` starts moto_server on a free port and stops it after."""

    def __init__(self, start_timeout_s: float = 30.0) -> None:
        self.start_timeout_s = start_timeout_s
        self.endpoint_url = ""
        self._proc: subprocess.Popen | None = None

    def start(self) -> str:
        exe = moto_server_executable()
        if exe is None:
            raise RuntimeError("moto_server not found: pip install 'moto[server]' (make test installs it)")
        port = free_loopback_port()
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self._proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                urllib.request.urlopen(self.endpoint_url, timeout=1).close()
                return self.endpoint_url
            except Exception:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    code = self._proc.poll()
                    self.stop()
                    raise RuntimeError(f"moto_server did not start on {self.endpoint_url} (exit code {code})") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class S3Bucket:
    """A bucket on a moto server: ``url("a/b")``, ``storage_cfg``, ``endpoint_url``, ``client()``."""

    endpoint_url: str
    bucket: str
    storage_cfg: StorageConfig

    def url(self, path: str = "") -> str:
        """``s3://{bucket}/{path}``."""
        return f"s3://{self.bucket}/{path.lstrip('/')}"

    def client(self) -> Any:
        """A boto3 client, for tests that inspect the server directly."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1")


def new_bucket(endpoint_url: str, prefix: str = "test") -> S3Bucket:
    """Create a fresh, empty, uniquely named bucket on ``endpoint_url``."""
    bucket = S3Bucket(
        endpoint_url=endpoint_url,
        bucket=f"{prefix}-{uuid.uuid4().hex[:16]}",
        storage_cfg=StorageConfig(endpoint_url=endpoint_url),
    )
    bucket.client().create_bucket(Bucket=bucket.bucket)
    return bucket
