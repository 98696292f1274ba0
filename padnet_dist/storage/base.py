"""The storage interface every backend implements, and its errors."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import BinaryIO

from padnet_dist.errors import UserError


class StorageError(UserError):
    """A storage operation failed for a reason the user can fix (permissions, endpoint, bucket)."""


class StorageNotFound(StorageError, FileNotFoundError):
    """The file or object does not exist. Also a FileNotFoundError, so generic code can catch it."""


class Storage(ABC):
    """Files addressed by URL. Every write is atomic: a reader sees the old content, or the whole new content.

    A single object (a file, one S3 PUT or one completed multipart upload) is atomic by itself. A *directory* of
    objects (a checkpoint, a shard set) is published by writing a marker (``COMMITTED``, a manifest) LAST with
    ``write_bytes``: readers must treat a directory without its marker as absent.
    Instances are picklable, so DataLoader workers and process pools can receive them.
    """

    @abstractmethod
    def read_bytes(self, url: str) -> bytes:
        """The whole content; ``StorageNotFound`` naming the URL when missing."""

    @abstractmethod
    def open_read(self, url: str) -> BinaryIO:
        """A streaming binary reader (close it, or use ``with``); ``StorageNotFound`` when missing."""

    @abstractmethod
    def write_bytes(self, url: str, data: bytes) -> None:
        """Atomically create or replace ``url`` with ``data``."""

    @abstractmethod
    def put_file(self, local_path: str, url: str) -> None:
        """Atomically upload/copy a local file to ``url`` (multipart on S3 for large files)."""

    @abstractmethod
    def get_file(self, url: str, local_path: str) -> None:
        """Download/copy ``url`` to ``local_path``, atomically (temp file in the same directory, then rename)."""

    @abstractmethod
    def exists(self, url: str) -> bool:
        """True when the file/object exists."""

    @abstractmethod
    def list(self, prefix_url: str) -> list[str]:
        """Full URLs of all files/objects below the directory ``prefix_url``, recursive, sorted; [] when none."""

    @abstractmethod
    def delete(self, url: str) -> None:
        """Remove one file/object; a missing one is not an error."""

    @abstractmethod
    def size(self, url: str) -> int:
        """The size in bytes of the file/object as stored; ``StorageNotFound`` when missing."""

    def abort_multipart_uploads(self, prefix_url: str) -> int:
        """Abort the unfinished multipart uploads below ``prefix_url`` (a crashed writer's), returning how many.

        Nothing to do where a write is one file renamed into place (local storage): 0.
        """
        return 0
