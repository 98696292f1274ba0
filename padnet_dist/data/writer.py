"""Write a split as WebDataset tar shards plus a manifest; used by every dataset converter.

Shards are written with ``webdataset.TarWriter`` (reproducible headers, see ``_tar_writer``) and validated against
the manifest schema ``shards/manifest.schema.json`` before the manifest is published.
Publication is ordered so that a reader never sees half a dataset: each shard is built in a local temp file and
uploaded atomically, then its completion record ``{shard}.done.json`` is written, and the manifest
``{split}.manifest.json`` is written LAST (an existing one is deleted before any shard is rewritten). A re-run
with the same jobs skips every shard whose completion record matches, so an interrupted conversion resumes.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from webdataset import TarWriter

from padnet_dist.config.run import StorageConfig
from padnet_dist.data.format import FORMAT_VERSION, encode_sample
from padnet_dist.data.manifest import Manifest, ShardInfo, manifest_url_for, write_manifest
from padnet_dist.errors import UserError
from padnet_dist.storage import join_url, storage_for

SPLIT_PATTERN = re.compile(r"^[A-Za-z0-9_\-]+$")
_TAR_BLOCK = 512


@dataclass(frozen=True)
class DatasetInfo:
    """What the manifest says about a dataset: class names and colours by train id, ignore label, camera."""

    name: str
    classes: list[str]
    palette: list[tuple[int, int, int]]
    ignore_index: int = 255
    camera_defaults: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _ShardTask:
    index: int
    name: str
    jobs: list
    load: Callable[[Any], dict]
    out_url: str
    storage_cfg: StorageConfig | None
    rgb_format: str
    fingerprint: str
    defaults_meta: dict
    tmp_dir: str


def _tar_writer(fileobj: Any) -> TarWriter:
    """WebDataset's writer with every varying header field fixed (mtime 0, uid/gid 0, no user or group names, mode
    0644, PAX): identical samples give byte-identical shards, so a shard's SHA-256 identifies its content. Members
    of a sample follow in the order of their suffixes (``TarWriter`` sorts them)."""
    return TarWriter(fileobj, user="", group="", mode=0o644, encoder=False, mtime=0, format="PAX_FORMAT")


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def _fingerprint(jobs: Sequence[Any], split: str, info: DatasetInfo, rgb_format: str) -> str:
    """Identifies a shard's content source; jobs must have a stable ``repr`` (paths, numbers, tuples)."""
    payload = {
        "format_version": FORMAT_VERSION,
        "dataset": info.name,
        "split": split,
        "rgb_format": rgb_format,
        "jobs": [repr(j) for j in jobs],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _tar_size(members: dict[str, bytes]) -> int:
    return sum(_TAR_BLOCK + -(-len(data) // _TAR_BLOCK) * _TAR_BLOCK for data in members.values())


def _load(load: Callable[[Any], dict], job: Any, where: str) -> dict:
    try:
        sample = load(job)
    except UserError as e:
        raise UserError(f"{where}: job {job!r}: {e}") from e
    except OSError as e:  # missing or unreadable input files are the user's to fix
        raise UserError(f"{where}: job {job!r}: {type(e).__name__}: {e}") from e
    except Exception as e:
        e.add_note(f"while loading job {job!r} for {where}")
        raise
    if not isinstance(sample, dict):
        raise UserError(f"{where}: job {job!r}: load() returned {type(sample).__name__}, not a sample dict")
    return sample


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _build_shard(task: _ShardTask) -> ShardInfo:
    """Load, encode and tar the task's jobs, publish the shard, then its completion record."""
    keys: list[str] = []
    tmp_path = os.path.join(task.tmp_dir, task.name)
    try:
        with open(tmp_path, "wb") as f, _tar_writer(f) as tar:
            for job in task.jobs:
                sample = dict(_load(task.load, job, task.name))
                sample["meta"] = {**task.defaults_meta, **(sample.get("meta") or {})}
                members = encode_sample(sample, rgb_format=task.rgb_format)
                key = sample["key"]
                if key in keys:
                    raise UserError(f"{task.name}: duplicate sample key '{key}' (job {job!r}): keys must be unique")
                keys.append(key)
                tar.write({"__key__": key, **members})
        shard = ShardInfo(
            name=task.name,
            num_samples=len(keys),
            num_bytes=os.path.getsize(tmp_path),
            sha256=_sha256_file(tmp_path),
            keys=keys,
        )
        storage = storage_for(task.out_url, task.storage_cfg)
        storage.put_file(tmp_path, join_url(task.out_url, task.name))
    finally:
        try:
            os.unlink(tmp_path)
        except FileNotFoundError:
            pass
    record = {"fingerprint": task.fingerprint, "format_version": FORMAT_VERSION, **shard.__dict__}
    storage.write_bytes(join_url(task.out_url, task.name + ".done.json"), json.dumps(record).encode())
    return shard


def _completed(storage: Any, out_url: str, name: str, fingerprint: str, existing: set[str]) -> ShardInfo | None:
    """The shard's info when its tar and a matching completion record are both present."""
    tar_url, record_url = join_url(out_url, name), join_url(out_url, name + ".done.json")
    if tar_url not in existing or record_url not in existing:
        return None
    try:
        record = json.loads(storage.read_bytes(record_url))
        if record.get("fingerprint") != fingerprint or record.get("format_version") != FORMAT_VERSION:
            return None
        return ShardInfo(**{k: record[k] for k in ("name", "num_samples", "num_bytes", "sha256", "keys")})
    except (ValueError, KeyError, TypeError, FileNotFoundError):
        return None  # an unreadable record means "not done": the shard is rebuilt


def write_shards(
    jobs: Sequence[Any],
    load: Callable[[Any], dict],
    *,
    out_url: str,
    split: str,
    info: DatasetInfo,
    storage_cfg: StorageConfig | None = None,
    samples_per_shard: int | None = None,
    target_shard_bytes: int = 1_000_000_000,
    num_workers: int = 1,
    rgb_format: str = "png",
    progress: bool = True,
) -> Manifest:
    """Convert ``jobs`` into shards ``{out_url}/{split}-{i:06d}.tar`` and publish ``{out_url}/{split}.manifest.json``.

    ``jobs`` are small picklable descriptors with a stable ``repr`` (paths, indices); ``load(job)`` returns a
    sample dict (docs/contracts.md) and must be picklable (module-level function or ``functools.partial``).
    Shard i holds jobs ``[i * n, (i + 1) * n)``; ``n = samples_per_shard`` or, when None, ``target_shard_bytes``
    divided by the encoded size of the first sample. ``num_workers`` processes build shards in parallel.
    """
    if not SPLIT_PATTERN.match(split):
        raise UserError(f"invalid split name {split!r}: use letters, digits, '_' or '-'")
    jobs = list(jobs)
    if not jobs:
        raise UserError(f"no samples to write for {info.name}/{split}: check the dataset root and split")
    if num_workers < 1:
        raise UserError("num_workers must be >= 1")
    if num_workers > 1:
        try:
            pickle.dumps(load)
        except Exception as e:
            raise UserError(f"load {load!r} cannot be sent to worker processes ({e}): make it module-level") from None
    defaults_meta = {"dataset": info.name, "split": split}
    if samples_per_shard is None:
        first = dict(_load(load, jobs[0], "sizing shards"))
        first["meta"] = {**defaults_meta, **(first.get("meta") or {})}
        samples_per_shard = max(1, target_shard_bytes // _tar_size(encode_sample(first, rgb_format=rgb_format)))
    if samples_per_shard < 1:
        raise UserError("samples_per_shard must be >= 1")

    storage = storage_for(out_url, storage_cfg)
    manifest_url = manifest_url_for(out_url, split)
    existing = set(storage.list(out_url))
    plan = [jobs[i : i + samples_per_shard] for i in range(0, len(jobs), samples_per_shard)]
    shards: list[ShardInfo | None] = []
    todo: list[int] = []
    fingerprints = [_fingerprint(chunk, split, info, rgb_format) for chunk in plan]
    for index, fingerprint in enumerate(fingerprints):
        done = _completed(storage, out_url, shard_name(split, index), fingerprint, existing)
        shards.append(done)
        if done is None:
            todo.append(index)
    if todo:
        # The old manifest may list shards about to be replaced: unpublish before touching any of them.
        storage.delete(manifest_url)

    from tqdm import tqdm

    bar = tqdm(total=len(jobs), unit="sample", desc=f"{info.name}/{split}", disable=not progress)
    bar.update(sum(s.num_samples for s in shards if s is not None))
    tmp_dir = tempfile.mkdtemp(prefix="padnet-shards-")
    try:
        tasks = [
            _ShardTask(
                index=i,
                name=shard_name(split, i),
                jobs=plan[i],
                load=load,
                out_url=out_url,
                storage_cfg=storage_cfg,
                rgb_format=rgb_format,
                fingerprint=fingerprints[i],
                defaults_meta=defaults_meta,
                tmp_dir=tmp_dir,
            )
            for i in todo
        ]
        if num_workers == 1 or len(tasks) <= 1:
            results = map(_build_shard, tasks)
            for task, shard in zip(tasks, results):
                shards[task.index] = shard
                bar.update(shard.num_samples)
        else:
            # spawn: boto3 clients and threads do not survive fork; jobs and load are pickled anyway.
            context = multiprocessing.get_context("spawn")
            with context.Pool(min(num_workers, len(tasks))) as pool:
                for task, shard in zip(tasks, pool.imap(_build_shard, tasks)):
                    shards[task.index] = shard
                    bar.update(shard.num_samples)
    finally:
        bar.close()
        shutil.rmtree(tmp_dir, ignore_errors=True)

    complete = [s for s in shards if s is not None]
    seen: dict[str, str] = {}
    for shard in complete:
        for key in shard.keys:
            if key in seen:
                raise UserError(f"sample key '{key}' appears in {seen[key]} and {shard.name}: keys must be unique")
            seen[key] = shard.name
    _delete_stale_shards(storage, out_url, split, len(plan), existing)
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        dataset=info.name,
        split=split,
        num_samples=sum(s.num_samples for s in complete),
        shards=complete,
        classes=list(info.classes),
        palette=[tuple(int(c) for c in rgb) for rgb in info.palette],
        ignore_index=info.ignore_index,
        camera_defaults=dict(info.camera_defaults),
        rgb_format=rgb_format,
        created_by="padnet-dist write_shards",
    )
    write_manifest(manifest, manifest_url, storage_cfg)
    return manifest


def _delete_stale_shards(storage: Any, out_url: str, split: str, num_shards: int, existing: set[str]) -> None:
    """Remove this split's shards beyond the current plan (left by an earlier run with more shards)."""
    pattern = re.compile(rf"/{re.escape(split)}-(\d{{6}})\.tar(\.done\.json)?$")
    for url in existing:
        match = pattern.search(url)
        if match and int(match.group(1)) >= num_shards:
            storage.delete(url)
