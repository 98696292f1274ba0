"""The lease ``{run.dir}/pipeline.lease``: at most one coordinator drives a run.

The lease is a small JSON object: ``{"holder": {"host", "pid", "user"}, "since", "expires", "token"}`` (unix
seconds). The holder renews ``expires`` (``heartbeat``) well within ``ttl_s``; anyone may take a lease whose
``expires`` has passed, or whose holder is a process of this host that no longer exists. Clocks of the machines
that run coordinators must agree to well within ``ttl_s`` (NTP).

Taking and renewing are atomic where the lease lives:
- ``s3://``: conditional PUTs. Creating sends ``If-None-Match: *``; taking over an expired lease and renewing send
  ``If-Match: <ETag read>``: of two coordinators racing, S3 lets exactly one write win (412 for the other).
- local files: every read-check-write (take, renew, release) holds an exclusive ``flock`` on ``pipeline.lease.lock``
  beside the lease, and the lease file itself is replaced atomically (temp file + rename), so a reader never sees a
  torn lease and of two coordinators racing for a free or expired lease exactly one writes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from padnet_dist.errors import UserError
from padnet_dist.storage import join_url
from padnet_dist.storage.local import atomic_write_local
from padnet_dist.storage.url import is_s3, local_path, split_s3

LEASE_FILE = "pipeline.lease"


class LeaseHeld(UserError):
    """Another coordinator holds the run's lease."""


class LeaseLost(UserError):
    """This coordinator's lease was taken by another (it stopped heartbeating for longer than the TTL)."""


def lease_url(run_dir: str) -> str:
    return join_url(run_dir, LEASE_FILE)


def identity() -> dict[str, object]:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = str(os.getuid())
    return {"host": socket.gethostname(), "pid": os.getpid(), "user": user}


def describe(lease: dict) -> str:
    h = lease.get("holder", {})
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(lease.get("since", 0)))
    expires = time.strftime("%H:%M:%S UTC", time.gmtime(lease.get("expires", 0)))
    return f"{h.get('user')}@{h.get('host')} pid {h.get('pid')} since {since} (lease expires {expires})"


def is_free(lease: dict, now: float) -> bool:
    """Expired, or held by a process of this host that is gone."""
    if lease.get("expires", 0) <= now:
        return True
    holder = lease.get("holder", {})
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder.get("pid", 0)), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            return False
    return False


@dataclass
class Lease:
    """A held lease. ``heartbeat()`` renews it (``LeaseLost`` if taken), ``release()`` deletes it."""

    url: str
    ttl_s: float
    token: str
    since: float
    storage_cfg: object = None
    _etag: str = ""

    def body(self, now: float) -> bytes:
        data = {"holder": identity(), "since": self.since, "expires": now + self.ttl_s, "token": self.token}
        return json.dumps(data).encode()

    def heartbeat(self) -> None:
        if is_s3(self.url):
            self._etag = _S3(self.storage_cfg).renew(self)
        else:
            _renew_local(self)

    def release(self) -> None:
        try:
            if is_s3(self.url):
                _S3(self.storage_cfg).delete(self)
            else:
                _release_local(self)
        except (LeaseLost, FileNotFoundError):
            pass


def acquire(run_dir: str, ttl_s: float, storage_cfg=None) -> Lease:
    """Take the run's lease or raise ``LeaseHeld`` naming the holder and since when."""
    url = lease_url(run_dir)
    now = time.time()
    lease = Lease(url=url, ttl_s=ttl_s, token=uuid.uuid4().hex, since=now, storage_cfg=storage_cfg)
    if is_s3(url):
        lease._etag = _S3(storage_cfg).acquire(lease, now)
    else:
        _acquire_local(lease, now)
    return lease


def read_lease(run_dir: str, storage_cfg=None) -> dict | None:
    url = lease_url(run_dir)
    if is_s3(url):
        found = _S3(storage_cfg).read(url)
        return found[0] if found else None
    return _read_local(local_path(url))


def _held(url: str, lease: dict) -> LeaseHeld:
    return LeaseHeld(
        f"another coordinator drives this run: {describe(lease)} ({url}); wait for it, stop it, or delete the "
        "lease file if you are sure it is gone"
    )


# -- local files ---------------------------------------------------------------------------------------------------
def _read_local(path: str) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}  # a torn or foreign file: treated as expired


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``path.lock`` for one read-check-write of the lease (released on close)."""
    fd = os.open(f"{path}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _acquire_local(lease: Lease, now: float) -> None:
    path = local_path(lease.url)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        current = _read_local(path)
        if current is not None and not is_free(current, now):
            raise _held(lease.url, current)
        body = lease.body(now)
        atomic_write_local(path, lambda f: f.write(body))


def _renew_local(lease: Lease) -> None:
    path = local_path(lease.url)
    with _locked(path):
        current = _read_local(path)
        if current is None or current.get("token") != lease.token:
            holder = describe(current) if current else "nobody"
            raise LeaseLost(f"the lease {lease.url} was taken over (now: {holder}): this coordinator stops")
        body = lease.body(time.time())
        atomic_write_local(path, lambda f: f.write(body))


def _release_local(lease: Lease) -> None:
    path = local_path(lease.url)
    with _locked(path):
        current = _read_local(path)
        if current is not None and current.get("token") == lease.token:
            os.unlink(path)


# -- S3 conditional writes -----------------------------------------------------------------------------------------
class _S3:
    def __init__(self, storage_cfg) -> None:
        from padnet_dist.storage.s3 import S3Storage

        self.storage = S3Storage(storage_cfg)

    def _put(self, url: str, body: bytes, **condition: str) -> str | None:
        """The new ETag, or None when the condition failed (412, or 409 for a concurrent conditional write)."""
        from botocore.exceptions import ClientError

        bucket, key = split_s3(url)
        try:
            response = self.storage.client().put_object(Bucket=bucket, Key=key, Body=body, **condition)
        except ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = e.response.get("Error", {}).get("Code")
            if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return None
            raise self.storage._error(e, url, "writing") from e
        return response["ETag"]

    def read(self, url: str) -> tuple[dict, str] | None:
        from padnet_dist.storage.base import StorageNotFound

        bucket, key = split_s3(url)
        try:
            response = self.storage._call(url, "reading", self.storage.client().get_object, Bucket=bucket, Key=key)
        except StorageNotFound:
            return None
        try:
            data = json.loads(response["Body"].read())
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = {}
        return data, response["ETag"]

    def acquire(self, lease: Lease, now: float) -> str:
        for _ in range(3):
            etag = self._put(lease.url, lease.body(now), IfNoneMatch="*")
            if etag is not None:
                return etag
            found = self.read(lease.url)
            if found is None:
                continue
            current, current_etag = found
            if not is_free(current, now):
                raise _held(lease.url, current)
            etag = self._put(lease.url, lease.body(now), IfMatch=current_etag)
            if etag is not None:
                return etag
        found = self.read(lease.url)
        raise _held(lease.url, found[0] if found else {})

    def renew(self, lease: Lease) -> str:
        etag = self._put(lease.url, lease.body(time.time()), IfMatch=lease._etag)
        if etag is None:
            found = self.read(lease.url)
            holder = describe(found[0]) if found else "nobody"
            raise LeaseLost(f"the lease {lease.url} was taken over (now: {holder}): this coordinator stops")
        return etag

    def delete(self, lease: Lease) -> None:
        from botocore.exceptions import ClientError

        bucket, key = split_s3(lease.url)
        try:
            self.storage.client().delete_object(Bucket=bucket, Key=key, IfMatch=lease._etag)
        except ClientError:
            pass  # taken over or gone: nothing of ours to release
