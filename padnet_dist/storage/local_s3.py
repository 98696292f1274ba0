"""A throwaway S3 endpoint on loopback (``moto_server``, from ``moto[server]``) for tests and benchmarks.

Real HTTP, real boto3: only the server is in memory. Not for data anyone wants to keep.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def moto_server_executable() -> str | None:
    """The ``moto_server`` beside this interpreter (a venv), else on PATH; None when not installed."""
    beside = Path(sys.executable).parent / "moto_server"
    return str(beside) if beside.exists() else shutil.which("moto_server")


class LocalS3Server:
    """``with LocalS3Server() as endpoint_url: ...`` starts moto_server on a free port and stops it after."""

    def __init__(self, start_timeout_s: float = 30.0) -> None:
        self.start_timeout_s = start_timeout_s
        self.endpoint_url = ""
        self._proc: subprocess.Popen | None = None

    def start(self) -> str:
        exe = moto_server_executable()
        if exe is None:
            raise RuntimeError("moto_server not found: pip install 'moto[server]' (make test installs it)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
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
