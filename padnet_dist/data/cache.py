"""Streaming samples out of a shard: a per-node disk cache of remote shards, or a read-ahead stream.

With a cache directory, a remote shard is downloaded once per node (atomic temp + rename inside
``Storage.get_file``; an exclusive ``flock`` makes racing local ranks and workers wait for the one download
instead of repeating it) and read from local disk afterwards. Without one, a remote shard is streamed
through a background thread that keeps a few chunks ahead of the reader, so network latency overlaps with
decoding. Local shards are opened directly. Samples are split out of the tar stream by ``format.iter_tar_samples``
(WebDataset's tar iteration); members of samples before the wanted range are skipped without being copied.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from padnet_dist.data.format import iter_tar_samples
from padnet_dist.storage import Storage, basename_url, is_s3

READ_AHEAD_CHUNK_BYTES = 4 << 20
READ_AHEAD_CHUNKS = 4


def cached_path(cache_dir: str, url: str, version: str = "") -> str:
    """Where ``url`` lives in the cache: a digest of the full URL (two datasets may share shard names) and of
    ``version`` (the manifest's SHA-256 of the shard, so a rewritten shard is never served stale)."""
    digest = hashlib.sha256(f"{url}\0{version}".encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f"{digest}-{basename_url(url)}")


def ensure_cached(storage: Storage, url: str, cache_dir: str, version: str = "") -> str:
    """The local path of ``url`` in ``cache_dir``, downloading it first if no process on this node has."""
    path = cached_path(cache_dir, url, version)
    if os.path.exists(path):
        return path
    os.makedirs(cache_dir, exist_ok=True)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not os.path.exists(path):  # another process may have finished while we waited
                storage.get_file(url, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return path


def open_shard(
    storage: Storage, url: str, *, cache_dir: str = "", version: str = "", read_ahead: bool = True
) -> BinaryIO:
    """A binary stream over the shard at ``url`` (close it when done)."""
    if not is_s3(url):
        return storage.open_read(url)
    if cache_dir:
        return open(ensure_cached(storage, url, cache_dir, version), "rb")
    stream = storage.open_read(url)
    return ReadAheadStream(stream) if read_ahead else stream


class ReadAheadStream(io.RawIOBase):
    """Reads ``source`` in a background thread, up to ``num_chunks`` chunks ahead of the consumer.

    Errors of the source are re-raised to the consumer at the point they occurred in the stream. Kept (with
    ``S3Storage``'s resuming reader, see ``storage.s3._S3Reader`` for the side-by-side measurement against
    ``pyarrow.fs``): it overlaps the network with decoding, 138 -> 148 MB/s on moto_server alone and more when the
    consumer decodes. The node cache is ``Storage.get_file`` (boto3's transfer manager) plus an ``flock`` so the
    ranks and workers of a node download a shard once; fsspec's ``filecache::`` has no such cross-process lock.
    """

    def __init__(
        self, source: BinaryIO, chunk_bytes: int = READ_AHEAD_CHUNK_BYTES, num_chunks: int = READ_AHEAD_CHUNKS
    ) -> None:
        super().__init__()
        self._source = source
        self._chunk_bytes = chunk_bytes
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=num_chunks)
        self._stop = threading.Event()
        self._buffer = memoryview(b"")
        self._eof = False
        self._thread = threading.Thread(target=self._fill, name="shard-read-ahead", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                chunk = self._source.read(self._chunk_bytes)
                self._put(chunk)
                if not chunk:
                    return
        except BaseException as e:  # handed to the consumer, which raises it in its own thread
            self._put(e)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._buffer:
            if self._eof:
                return 0
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._eof = True
                raise item
            if not item:
                self._eof = True
                return 0
            self._buffer = memoryview(item)
        n = min(len(b), len(self._buffer))
        b[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        parts, remaining = [], size
        while remaining > 0:
            buf = bytearray(min(remaining, max(len(self._buffer), 1 << 16)))
            n = self.readinto(buf)
            if n == 0:
                break
            parts.append(bytes(buf[:n]))
            remaining -= n
        return b"".join(parts)

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            self._thread.join(timeout=5)
            self._source.close()
        super().close()


@dataclass
class ShardRead:
    """One sample as read from its shard: its tar members by suffix, or (members None) why there are none."""

    url: str
    key: str
    members: dict[str, bytes] | None
    error: str = ""


def read_shard_samples(
    storage: Storage,
    url: str,
    start: int,
    count: int,
    *,
    keys: Sequence[str] = (),
    cache_dir: str = "",
    version: str = "",
    read_ahead: bool = True,
) -> Iterator[ShardRead]:
    """Samples ``start .. start + count - 1`` of the shard at ``url``, in tar order: exactly ``count`` reads.

    A broken, truncated or short shard yields error reads (named by ``keys``, the manifest's key list, when
    given) for the samples it could not provide; nothing is raised.
    """
    produced, error = start, ""
    try:
        with open_shard(storage, url, cache_dir=cache_dir, version=version, read_ahead=read_ahead) as stream:
            for key, members in iter_tar_samples(stream, url, skip=start):
                if produced >= start + count:
                    break
                yield ShardRead(url, key, members)
                produced += 1
    except Exception as e:  # any failure to read the stream makes the rest of the shard unavailable
        error = f"unreadable shard ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    for index in range(produced, start + count):
        key = keys[index] if index < len(keys) else f"#{index}"
        yield ShardRead(url, key, None, error or "shard holds fewer samples than its manifest lists")
