"""Checkpoints in any storage, visible only once committed, resumable exactly.

Layout (docs/contracts.md): ``{run.dir}/phase{p}/checkpoints/step-{step:09d}/`` holding ``engine/`` (DeepSpeed
files of every rank: the only copy of the weights), ``loader-rank{r}.json``, ``rng-rank{r}.json``,
``trainer.json``, ``config.yaml`` and, written last by rank 0 once every rank's files are verified,
``COMMITTED`` (every file's size and SHA-256, so a truncated or corrupt file is named on load). Readers ignore
directories without ``COMMITTED``. Saving is two steps: ``take_snapshot`` (a collective, in memory, the only part
training waits for) and ``publish`` (write, verify, agree, commit, prune; run in the background by
``train.uploader.CheckpointUploader``). The fp32 weights for inference are derived on demand (``train.weights``).

``load`` resumes on any number of ranks for ZeRO stages 0-2 (``reshard``), each rank reading only the files it needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from padnet_dist.collectives import barrier, gather_objects
from padnet_dist.config import Config, ModelConfig, StorageConfig, from_yaml_text
from padnet_dist.errors import UserError
from padnet_dist.storage import StorageError, join_url, storage_for
from padnet_dist.storage.local import atomic_write_local
from padnet_dist.storage.url import is_s3, local_path
from padnet_dist.world import World

COMMIT_MARKER = "COMMITTED"
UPLOAD_ATTEMPTS = 3  # writes of one checkpoint file before the checkpoint is given up (never committed)
UPLOAD_RETRY_PAUSE_S = 2.0  # doubled after each failed attempt
_STEP_DIR = re.compile(r"step-(\d{9})$")


@dataclass(frozen=True)
class TrainerState:
    """Where a resumed run continues: optimiser step, epoch, and this rank's loader and RNG state."""

    step: int
    epoch: int
    loader_state: dict[str, Any]
    rng_state: dict[str, Any]


def phase_dir(run_dir: str, phase: int) -> str:
    return join_url(run_dir, f"phase{phase}")


def checkpoint_url(phase_dir_url: str, step: int) -> str:
    return join_url(phase_dir_url, "checkpoints", f"step-{step:09d}")


def list_committed(phase_dir_url: str, storage) -> list[tuple[int, str]]:
    """``(step, url)`` of every committed checkpoint of a phase, oldest first."""
    return [(s, u) for s, u, committed in _list_step_dirs(phase_dir_url, storage) if committed]


def newest_committed(phase_dir_url: str, storage) -> str | None:
    found = list_committed(phase_dir_url, storage)
    return found[-1][1] if found else None


def is_committed(ckpt_url: str, storage) -> bool:
    return storage.exists(join_url(ckpt_url, COMMIT_MARKER))


def committed_step(ckpt_url: str, storage) -> int:
    """The training step a committed checkpoint was taken after (from its ``COMMITTED`` marker)."""
    return int(_read_json(join_url(ckpt_url, COMMIT_MARKER), storage)["step"])


def committed_epoch(ckpt_url: str, storage) -> int:
    """The epoch the step after a committed checkpoint belongs to (``trainer.json``)."""
    return int(_read_json(join_url(ckpt_url, "trainer.json"), storage)["epoch"])


def read_loader_state(ckpt_url: str, world: World, storage) -> dict[str, Any]:
    """The loader state this rank continues from: its own, or on a larger world rank ``rank % saved ranks``'s (the
    ranks of a job consume batches in lockstep, so any saved rank's state tells where the epoch stands)."""
    source = world.rank % saved_world_size(ckpt_url, storage)
    return _read_json(join_url(ckpt_url, f"loader-rank{source}.json"), storage)


def resolve_resume(resume: str, phase_dir_url: str, storage) -> str | None:
    """The checkpoint a phase resumes from, per ``resume`` (``run.resume``: auto | never | URL); None to start fresh.

    ``phase_dir_url``: this run's directory of the phase, where ``auto`` looks and ``never`` expects nothing.
    """
    if resume == "never":
        existing = newest_committed(phase_dir_url, storage)
        if existing is not None:
            raise UserError(
                f"run.resume=never but {existing} exists: choose a new run.dir, or run.resume=auto to continue it"
            )
        return None
    if resume == "auto":
        return newest_committed(phase_dir_url, storage)
    if not is_committed(resume, storage):
        raise UserError(f"run.resume={resume} is not a committed checkpoint: give a step-... directory with COMMITTED")
    return resume


def resolve_phase2_init(init_from: str, run_dir: str, storage) -> str:
    """The phase-1 checkpoint phase 2 starts from: ``init_from`` (``phases.phase2.init_from``: a checkpoint, a
    phase-1 dir or a run dir) when given, else the newest committed phase-1 checkpoint of ``run_dir``."""
    if init_from:
        found = find_committed(init_from, storage, phases=(1,))
        if found is None:
            raise UserError(f"phases.phase2.init_from={init_from} holds no committed checkpoint: point it at phase 1's")
        return found
    found = newest_committed(phase_dir(run_dir, 1), storage)
    if found is None:
        raise UserError(
            f"phase 2 starts from phase 1, but {phase_dir(run_dir, 1)} has no committed checkpoint: "
            "train phase=1 first or set phases.phase2.init_from=URL"
        )
    return found


def model_differences(saved: ModelConfig, current: ModelConfig) -> list[str]:
    """Names of the ``model.*`` keys whose values differ."""
    a, b = dataclasses.asdict(saved), dataclasses.asdict(current)
    return [f"model.{k}" for k in sorted(a) if a[k] != b.get(k)]


def read_config(ckpt_url: str, storage) -> Config:
    url = join_url(ckpt_url, "config.yaml")
    try:
        return from_yaml_text(storage.read_bytes(url).decode())
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"checkpoint file {url} is corrupt ({type(e).__name__}): use another checkpoint") from None


def check_model_matches(ckpt_url: str, current: ModelConfig, storage) -> None:
    """Refuse a checkpoint of a different network, naming the keys that differ."""
    differ = model_differences(read_config(ckpt_url, storage).model, current)
    if differ:
        raise UserError(
            f"checkpoint {ckpt_url} was trained with a different model ({', '.join(differ)} differ): "
            "use the same model settings, or a new run.dir"
        )


def read_model_state(ckpt_url: str, storage) -> dict[str, torch.Tensor]:
    """The consolidated fp32 state dict of a checkpoint's bare model (see ``padnet_dist.train.weights``)."""
    from padnet_dist.train.weights import model_state_of

    return model_state_of(ckpt_url, storage)


@dataclass
class Snapshot:
    """One rank's state at one step, held in memory until ``publish`` writes it (from any thread).

    ``engine_states``: (path relative to the checkpoint, DeepSpeed state to ``torch.save``) with tensors of their
    own; ``small_files``: loader and RNG state, and on rank 0 ``trainer.json`` and ``config.yaml``; ``local_dir``:
    where DeepSpeed wrote its own files and the states are serialised (the checkpoint directory itself on local
    storage, a temporary directory, removed by ``publish``, for ``s3://``).
    """

    ckpt_url: str
    step: int
    epoch: int
    rank: int
    engine_states: list[tuple[str, Any]]
    small_files: dict[str, bytes]
    local_dir: Path
    staged: bool
    extra_uploads: dict[str, str]


def take_snapshot(
    engine,
    state: TrainerState,
    *,
    ckpt_url: str,
    phase: int,
    config_yaml: str,
    world: World,
    storage,
    extra_uploads: dict[str, str] | None = None,
    reuse: Snapshot | None = None,
) -> Snapshot:
    """Copy this rank's state (engine, ``state``) for a checkpoint at ``ckpt_url`` (a collective: every rank calls
    it). Training may change the engine as soon as it returns. Rank 0 withdraws an earlier commit of the same step
    (a run resumed from an earlier checkpoint rewrites it). ``extra_uploads``: local files to publish with it (log
    mirrors: file -> URL). ``reuse``: a published snapshot whose memory the copy may overwrite."""
    from padnet_dist.train import engine as seam  # here, so that reading a checkpoint never imports DeepSpeed

    if world.is_main and is_committed(ckpt_url, storage):
        storage.delete(join_url(ckpt_url, COMMIT_MARKER))
    barrier()  # sync point: no rank writes into a directory that still looks committed
    staged = is_s3(ckpt_url)
    local_dir = Path(tempfile.mkdtemp(prefix="padnet-ckpt-")) if staged else Path(local_path(ckpt_url))
    local_dir.mkdir(parents=True, exist_ok=True)
    old = [(local_dir / rel, st) for rel, st in reuse.engine_states] if reuse is not None else []
    captured = seam.snapshot_engine_state(engine, local_dir, reuse=old)
    small_files = {
        f"loader-rank{world.rank}.json": json.dumps(state.loader_state).encode(),
        f"rng-rank{world.rank}.json": json.dumps(state.rng_state).encode(),
    }
    if world.is_main:
        trainer = {"step": state.step, "epoch": state.epoch, "phase": phase, "world_size": world.world_size}
        small_files["trainer.json"] = json.dumps(trainer).encode()
        small_files["config.yaml"] = config_yaml.encode()
    return Snapshot(
        ckpt_url=ckpt_url,
        step=state.step,
        epoch=state.epoch,
        rank=world.rank,
        engine_states=[(path.relative_to(local_dir).as_posix(), st) for path, st in captured],
        small_files=small_files,
        local_dir=local_dir,
        staged=staged,
        extra_uploads=dict(extra_uploads or {}),
    )


def publish(snap: Snapshot, *, phase_dir_url: str, keep_last: int, storage, group=None) -> str | None:
    """Write this rank's files of ``snap``, verify them, and commit once every rank's are verified (a collective
    over ``group``, the ranks' process group or a side group of theirs; callable from a background thread).

    Each file is retried ``UPLOAD_ATTEMPTS`` times. Rank 0 writes ``COMMITTED`` (every file's size and SHA-256)
    only when all ranks succeeded, then prunes ``phase_dir_url`` to the newest ``keep_last``. Returns None when
    committed, else why not (the same on every rank); a failed checkpoint is never committed.
    """
    try:
        files, error = write_snapshot(snap, storage), None
    except Exception as e:  # reported, never raised here: every rank must reach the agreement below
        files, error = {}, f"rank {snap.rank}: {_one_line(e)}"
    results = gather_objects((files, error), group=group)
    failures = [err for _, err in results if err]
    commit_error = None
    if not failures and snap.rank == 0:
        all_files = {k: v for part, _ in results for k, v in part.items()}
        try:
            write_marker(snap.ckpt_url, step=snap.step, epoch=snap.epoch, files=all_files, storage=storage)
        except Exception as e:
            commit_error = f"rank 0: writing {COMMIT_MARKER}: {_one_line(e)}"
        try:
            if commit_error is None:
                prune(phase_dir_url, keep_last, storage)
        except Exception as e:  # committed all the same: the next commit prunes again
            print(f"checkpoint: pruning {phase_dir_url} failed: {_one_line(e)}", file=sys.stderr, flush=True)
    if not failures:
        # the other ranks learn whether rank 0's marker was written
        failures = [err for err in gather_objects(commit_error, group=group) if err]
    return "; ".join(failures) if failures else None


def write_snapshot(snap: Snapshot, storage) -> dict[str, tuple[int, str]]:
    """Write and verify this rank's files of ``snap``: ``{path relative to the checkpoint: (bytes, SHA-256)}``.

    Each file is written atomically and checked against its size as stored; a failure is retried
    ``UPLOAD_ATTEMPTS`` times, then raised. Removes the staging directory; the states stay, for ``take_snapshot``'s
    ``reuse``.
    """
    written: dict[str, tuple[int, str]] = {}
    try:
        for name, data in snap.small_files.items():
            url = join_url(snap.ckpt_url, name)
            _retrying(lambda url=url, data=data: _write_verified(storage, data, url))
            written[name] = (len(data), hashlib.sha256(data).hexdigest())
        own = [rel for rel, _ in snap.engine_states]
        for rel, state in snap.engine_states:
            _retrying(lambda path=str(snap.local_dir / rel), state=state: _save_state(state, path))
        for rel in own:
            path = snap.local_dir / rel
            written[rel] = (path.stat().st_size, _sha256_file(path))
            if snap.staged:
                _retrying(lambda rel=rel, path=path: _put_verified(storage, str(path), join_url(snap.ckpt_url, rel)))
            else:
                _verify_size(storage, join_url(snap.ckpt_url, rel), written[rel][0])
        for local_file, url in snap.extra_uploads.items():
            if os.path.exists(local_file):
                storage.put_file(local_file, url)
    finally:
        if snap.staged:
            shutil.rmtree(snap.local_dir, ignore_errors=True)
    return written


def write_marker(ckpt_url: str, *, step: int, epoch: int, files: dict[str, tuple[int, str]], storage) -> None:
    """Commit: ``COMMITTED`` with step, epoch, time, ``files`` (relative path -> bytes) and ``sha256`` (relative
    path -> hex digest) of every file of every rank."""
    marker = {
        "step": step,
        "epoch": epoch,
        "time": time.time(),
        "files": {k: size for k, (size, _) in files.items()},
        "sha256": {k: digest for k, (_, digest) in files.items()},
    }
    storage.write_bytes(join_url(ckpt_url, COMMIT_MARKER), json.dumps(marker, sort_keys=True).encode())


def save(
    engine,
    state: TrainerState,
    *,
    ckpt_url: str,
    phase: int,
    phase_dir_url: str,
    keep_last: int,
    config_yaml: str,
    world: World,
    storage,
    extra_uploads: dict[str, str] | None = None,
) -> None:
    """``take_snapshot`` then ``publish``, synchronously (a collective); raises when the checkpoint was not
    committed. The training loop does the same with the writing in the background (``CheckpointUploader``)."""
    snap = take_snapshot(engine, state, ckpt_url=ckpt_url, phase=phase, config_yaml=config_yaml, world=world,
                         storage=storage, extra_uploads=extra_uploads)  # fmt: skip
    error = publish(snap, phase_dir_url=phase_dir_url, keep_last=keep_last, storage=storage)
    if error is not None:
        raise StorageError(f"checkpoint {ckpt_url} was not committed ({error}): check the storage and retry")


def abort_unfinished_uploads(phase_dir_url: str, storage) -> int:
    """Abort the multipart uploads a killed run left below the phase's checkpoints (before any rank writes)."""
    return storage.abort_multipart_uploads(join_url(phase_dir_url, "checkpoints"))


def saved_world_size(ckpt_url: str, storage) -> int:
    """How many ranks wrote a committed checkpoint (``trainer.json``)."""
    return int(_read_json(join_url(ckpt_url, "trainer.json"), storage)["world_size"])


def check_resumable(ckpt_url: str, *, zero_stage: int, world: World, storage) -> None:
    """Refuse, in one line with the way out, a checkpoint this job cannot continue: ZeRO-3 state of another world
    size (its parameters are partitioned by DeepSpeed itself; we re-shard stages 0-2 only)."""
    saved_ranks = saved_world_size(ckpt_url, storage)
    saved_stage = read_config(ckpt_url, storage).engine.zero_stage
    if saved_ranks != world.world_size and 3 in (saved_stage, zero_stage):
        raise UserError(
            f"checkpoint {ckpt_url} (ZeRO stage {saved_stage}, {saved_ranks} ranks) cannot be resumed on "
            f"{world.world_size} ranks with ZeRO stage {zero_stage}: ZeRO-3 state is re-sharded only by DeepSpeed on "
            f"the same world size; resume on {saved_ranks} ranks, or use engine.zero_stage=0, 1 or 2 on both sides"
        )
    if saved_stage != zero_stage and 3 in (saved_stage, zero_stage):
        raise UserError(
            f"checkpoint {ckpt_url} was saved with engine.zero_stage={saved_stage}: resume with the same stage "
            "(stages 0, 1 and 2 convert into each other; 3 does not)"
        )


def load(engine, *, ckpt_url: str, model_cfg: ModelConfig, world: World, storage) -> TrainerState:
    """Restore engine, loader and RNG state of this rank from a committed checkpoint.

    Any world size for ZeRO stages 0-2 (``reshard``: each rank reads the module file and only the saved ZeRO
    partitions that hold its own partition's parameters; no collective); DeepSpeed's own loader for ZeRO-3 and
    fp16 on the saved world size (a collective). A rank beyond the saved ones takes the loader and RNG state of
    rank ``rank % saved_world_size`` (the loader continues the epoch elastically, see ``ShardLoader``).
    Refuses a network other than ``model_cfg`` and what ``check_resumable`` refuses.
    """
    from padnet_dist.train import engine as seam
    from padnet_dist.train.reshard import read_full_state

    trainer = _read_json(join_url(ckpt_url, "trainer.json"), storage)
    saved_ranks = int(trainer["world_size"])
    check_model_matches(ckpt_url, model_cfg, storage)
    zero_stage = seam.zero_stage_of(engine)
    check_resumable(ckpt_url, zero_stage=zero_stage, world=world, storage=storage)
    saved_stage = read_config(ckpt_url, storage).engine.zero_stage
    remote = is_s3(ckpt_url)
    staging = Path(tempfile.mkdtemp(prefix="padnet-resume-")) if remote else Path(local_path(ckpt_url))
    expected = _committed_files(ckpt_url, storage)
    digests = _read_json(join_url(ckpt_url, COMMIT_MARKER), storage).get("sha256", {})
    verified: set[str] = set()

    def fetch(name: str) -> Path:
        """The local path of engine file ``name``, downloaded if remote, its size and SHA-256 checked once."""
        rel = f"{seam.ENGINE_TAG}/{name}"
        target = staging / rel
        if rel in verified:
            return target
        if remote and rel in expected and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            storage.get_file(join_url(ckpt_url, rel), str(target))
        actual = target.stat().st_size if target.exists() else -1
        if rel not in expected or actual != expected[rel]:
            raise UserError(_truncated(join_url(ckpt_url, rel), actual, expected.get(rel, 0)))
        if rel in digests and _sha256_file(target) != digests[rel]:
            raise UserError(f"checkpoint file {join_url(ckpt_url, rel)} is corrupt (SHA-256 differs from "
                            f"{COMMIT_MARKER}'s): resume from another checkpoint (run.resume=URL)")  # fmt: skip
        verified.add(rel)
        return target

    try:
        if zero_stage == 3 or (
            seam.uses_fp16(engine) and saved_ranks == world.world_size and saved_stage == zero_stage
        ):
            for rel in sorted(expected):
                if rel.startswith(seam.ENGINE_TAG + "/"):
                    fetch(rel.split("/", 1)[1])
            seam.load_engine_state(engine, staging)
        else:
            state = read_full_state(
                fetch,
                saved_world_size=saved_ranks,
                saved_zero_stage=saved_stage,
                trained_names=seam.trained_parameter_names(engine),
                needed=seam.owned_parameter_names(engine, zero_stage),
            )
            seam.load_full_state(engine, state, zero_stage)
    finally:
        if remote:
            shutil.rmtree(staging, ignore_errors=True)
    source = world.rank % saved_ranks
    return TrainerState(
        step=int(trainer["step"]),
        epoch=int(trainer["epoch"]),
        loader_state=_read_json(join_url(ckpt_url, f"loader-rank{source}.json"), storage),
        rng_state=_read_json(join_url(ckpt_url, f"rng-rank{source}.json"), storage),
    )


def prune(phase_dir_url: str, keep_last: int, storage) -> None:
    """Keep the newest ``keep_last`` committed checkpoints; drop older ones and older uncommitted leftovers.

    The marker of a doomed checkpoint goes first, so a half-deleted directory is never seen as committed.
    """
    dirs = _list_step_dirs(phase_dir_url, storage)
    committed = [s for s, _, c in dirs if c]
    if not committed:
        return
    keep = set(committed[-keep_last:])
    for step, url, is_done in dirs:
        if step in keep or (not is_done and step >= committed[-1]):
            continue
        if is_done:
            storage.delete(join_url(url, COMMIT_MARKER))
        for obj in storage.list(url):
            storage.delete(obj)
        if not is_s3(url):
            shutil.rmtree(local_path(url), ignore_errors=True)


def find_committed(url: str, storage, phases: tuple[int, ...] = (2, 1)) -> str | None:
    """The committed checkpoint ``url`` names: itself, the newest of a phase dir, or the newest of a run dir's
    ``phases`` (in that order of preference); None when there is none."""
    url = url.rstrip("/")
    found = url if is_committed(url, storage) else newest_committed(url, storage)
    for phase in phases:
        found = found or newest_committed(phase_dir(url, phase), storage)
    return found


def resolve_checkpoint(url: str, storage_cfg: StorageConfig | None = None) -> str:
    """``find_committed`` for a user-given URL (run dirs prefer phase 2); a one-line error when there is none."""
    found = find_committed(url, storage_for(url, storage_cfg))
    if found is None:
        raise UserError(f"{url} holds no committed checkpoint: give a step-... directory, a phase dir or a run dir")
    return found


def read_inference_checkpoint(url: str, storage_cfg: StorageConfig | None = None) -> tuple[Config, dict]:
    """``(config, fp32 state dict)`` of a checkpoint URL, or of the newest committed one of a phase or run dir."""
    ckpt = resolve_checkpoint(url, storage_cfg)
    storage = storage_for(ckpt, storage_cfg)
    return read_config(ckpt, storage), read_model_state(ckpt, storage)


def _list_step_dirs(phase_dir_url: str, storage) -> list[tuple[int, str, bool]]:
    """``(step, url, committed)`` of every step directory below ``{phase_dir}/checkpoints``, by step."""
    root = join_url(phase_dir_url, "checkpoints")
    found: dict[int, tuple[str, bool]] = {}
    for obj in storage.list(root):
        rel = obj[len(root) :].strip("/") if obj.startswith(root) else obj
        head, _, rest = rel.partition("/")
        match = _STEP_DIR.match(head)
        if not match:
            continue
        step = int(match.group(1))
        url, committed = found.get(step, (join_url(root, head), False))
        found[step] = (url, committed or rest == COMMIT_MARKER)
    return [(s, u, c) for s, (u, c) in sorted(found.items())]


def _committed_files(ckpt_url: str, storage) -> dict[str, int]:
    return dict(_read_json(join_url(ckpt_url, COMMIT_MARKER), storage).get("files", {}))


def _truncated(url: str, actual: int, expected: int) -> str:
    what = "missing" if actual < 0 else f"{actual} bytes, expected {expected}"
    return f"checkpoint file {url} is truncated or corrupt ({what}): resume from another checkpoint (run.resume=URL)"


def _read_json(url: str, storage) -> dict[str, Any]:
    data = storage.read_bytes(url)
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(
            f"checkpoint file {url} is truncated or corrupt (not valid JSON): use another checkpoint"
        ) from None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_size(storage, url: str, size: int) -> None:
    stored = storage.size(url)
    if stored != size:
        raise StorageError(f"{url} holds {stored} bytes after writing {size}")


def _put_verified(storage, path: str, url: str) -> None:
    storage.put_file(path, url)
    _verify_size(storage, url, os.path.getsize(path))


def _save_state(state: Any, path: str) -> None:
    atomic_write_local(path, lambda f: torch.save(state, f))


def _write_verified(storage, data: bytes, url: str) -> None:
    storage.write_bytes(url, data)
    _verify_size(storage, url, len(data))


def _retrying(write) -> None:
    """``write()``, again after a pause when it fails (storage clients already retry each request: this covers
    a whole file that failed or did not verify), at most ``UPLOAD_ATTEMPTS`` times."""
    for attempt in range(UPLOAD_ATTEMPTS):
        try:
            write()
            return
        except (StorageError, OSError) as e:
            if attempt + 1 == UPLOAD_ATTEMPTS:
                raise
            pause_s = UPLOAD_RETRY_PAUSE_S * 2**attempt
            print(f"checkpoint: {_one_line(e)}: retrying in {pause_s:.0f} s", file=sys.stderr, flush=True)
            time.sleep(pause_s)


def _one_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}" if not isinstance(e, UserError) else text
