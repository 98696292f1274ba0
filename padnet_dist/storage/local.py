"""Local filesystem storage: plain paths and ``file://`` URLs."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import BinaryIO

from padnet_dist.storage.base import Storage, StorageError, StorageNotFound
from padnet_dist.storage.url import join_url, local_path

# Temporary files live next to their target (os.replace is atomic only within one filesystem) and carry this
# marker so that ``list`` never reports a write in progress or one a crash left behind.
TMP_MARKER = ".tmp-padnet-"


def _not_found(url: str) -> StorageNotFound:
    return StorageNotFound(f"file not found: {url} (check the path, or create it first)")


def atomic_write_local(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` via ``write(file)`` into a temp file in the same directory, fsync, then ``os.replace``.

    On any failure the temp file is removed and an existing ``path`` keeps its old content.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}{TMP_MARKER}", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # The rename itself is durable only once the directory entry is flushed.
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


class LocalStorage(Storage):
    """Files on a local (or network-mounted) filesystem."""

    def read_bytes(self, url: str) -> bytes:
        with self.open_read(url) as f:
            return f.read()

    def open_read(self, url: str) -> BinaryIO:
        path = local_path(url)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise _not_found(url) from None
        except IsADirectoryError:
            raise StorageError(f"{url} is a directory, not a file") from None
        except PermissionError:
            raise StorageError(f"permission denied reading {url}") from None

    def write_bytes(self, url: str, data: bytes) -> None:
        atomic_write_local(local_path(url), lambda f: f.write(data))

    def put_file(self, local_path_: str, url: str) -> None:
        if not os.path.isfile(local_path_):
            raise StorageNotFound(f"local file to upload not found: {local_path_}")
        with open(local_path_, "rb") as src:
            atomic_write_local(local_path(url), lambda f: shutil.copyfileobj(src, f, 8 << 20))

    def get_file(self, url: str, local_path_: str) -> None:
        with self.open_read(url) as src:
            atomic_write_local(local_path_, lambda f: shutil.copyfileobj(src, f, 8 << 20))

    def exists(self, url: str) -> bool:
        return os.path.isfile(local_path(url))  # files only, like S3 objects: a directory is not an object

    def list(self, prefix_url: str) -> list[str]:
        root = local_path(prefix_url)
        found = []
        for dirpath, _, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root)
            for name in filenames:
                if TMP_MARKER in name:
                    continue
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                found.append(join_url(prefix_url, rel))
        return sorted(found)

    def delete(self, url: str) -> None:
        try:
            os.remove(local_path(url))
        except FileNotFoundError:
            pass

    def size(self, url: str) -> int:
        try:
            return os.path.getsize(local_path(url))
        except FileNotFoundError:
            raise _not_found(url) from None
