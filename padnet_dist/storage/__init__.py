"""Storage keyed by URL scheme: local paths / ``file://`` and ``s3://``. See ``Storage`` for the guarantees."""

from __future__ import annotations

from padnet_dist.config.run import StorageConfig
from padnet_dist.storage.base import Storage, StorageError, StorageNotFound
from padnet_dist.storage.url import basename_url, is_s3, join_url, parent_url, scheme_of

__all__ = [
    "Storage",
    "StorageError",
    "StorageNotFound",
    "basename_url",
    "is_s3",
    "join_url",
    "parent_url",
    "storage_for",
]


def storage_for(url: str, storage_cfg: StorageConfig | None = None) -> Storage:
    """The backend for ``url``'s scheme: ``LocalStorage`` for paths and ``file://``, ``S3Storage`` for ``s3://``."""
    if scheme_of(url) == "s3":
        from padnet_dist.storage.s3 import S3Storage

        return S3Storage(storage_cfg)
    from padnet_dist.storage.local import LocalStorage

    return LocalStorage()
