"""The training and evaluation loader over WebDataset tar shards, with exact mid-epoch resume.

Which samples a rank and each of its DataLoader workers read is decided by ``data.assignment.plan_epoch``
(a pure function); this module streams the planned ranges of tar shards (``webdataset`` tar iteration over
``Storage`` streams), decodes, augments, computes the derived targets and collates whole batches inside the
workers. The trainer-side ``ShardLoader`` counts batches as it hands them out, so ``state_dict()`` says
exactly where to restart: a fresh loader given that state yields the same remaining batches, tensor-equal.
A state saved by another geometry (world size, workers, batch size) in the middle of an epoch continues that
epoch elastically: the samples no rank consumed yet, spread over the new ranks (``assignment.remaining_sequence``).

With ``persistent_workers`` (and ``num_workers > 0``) the DataLoader workers are forked once and serve every epoch:
the epoch and resume position reach them through a small shared-memory tensor read at the start of each epoch.

A corrupt sample (undecodable member, missing member, broken or short shard) is logged with its shard URL
and key, counted in ``ShardLoader.stats`` and replaced by an invalid-marked copy of a neighbouring sample, so
every rank still runs the same number of batches. With ``data.strict`` the first one is a ``UserError``.

Depth: ground truth outside ``(data.min_depth_m, data.max_depth_m)`` is invalid in the decoded sample, before
augmentation (which applies the range to the source window it reads), so the range is in the sensor's true metres
and an out-of-range value never blends into a valid neighbour. Normals come from that metric depth; ``batch["depth"]``
then holds ``data.depth_target`` (depth in metres, disparity in pixels from each sample's baseline and fx, or inverse
depth), 0 = invalid.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from padnet_dist.config.data import DataConfig
from padnet_dist.config.run import StorageConfig
from padnet_dist.data.assignment import EpochPlan, EpochSegment, WorkerPlan, plan_epoch, remaining_sequence
from padnet_dist.data.augment import augment_sample, draw_params, prepare_eval_sample, sample_rng
from padnet_dist.data.cache import ShardRead, read_shard_samples
from padnet_dist.data.format import MEMBER_ORDER, TRAINING_KINDS, decode_sample
from padnet_dist.data.manifest import read_manifest
from padnet_dist.data.workers import stop_signals_held, worker_init
from padnet_dist.errors import UserError
from padnet_dist.storage import storage_for
from padnet_dist.data.targets import (
    contours_at_size,
    contours_from_labels,
    depth_to_target,
    intermediate_size,
    normals_at_size,
    normals_from_depth,
)
from padnet_dist.world import World

log = logging.getLogger(__name__)

STATE_VERSION = 2
_READABLE_STATE_VERSIONS = (1, 2)  # version 1: no segments, shuffle_block_batches as configured


@dataclass(frozen=True)
class LoaderSpec:
    """Everything a worker needs, as plain picklable values (the config stays at the boundary)."""

    shard_urls: tuple[str, ...]
    shard_sizes: tuple[int, ...]
    shard_sha256: tuple[str, ...]
    shard_keys: tuple[tuple[str, ...], ...]  # sample keys in tar order, as the manifest lists them ("" unknown)
    fingerprint: str
    storage_cfg: StorageConfig | None
    train: bool
    world_size: int
    rank: int
    num_workers: int
    batch_size: int
    seed: int
    shuffle: bool
    shuffle_block_batches: int
    crop_height: int
    crop_width: int
    scales: tuple[float, ...]
    divide_depth_by_scale: bool
    flip_prob: float
    contour_width: int
    ignore_index: int
    strict: bool
    depth_target: str = "depth"  # depth | disparity | inverse_depth
    min_depth_m: float = 0.0
    max_depth_m: float = 0.0  # 0 = no upper bound
    cache_dir: str = ""
    dataset_name: str = ""  # from the manifest: "cityscapes", "nyud", "synthetic", ...
    class_names: tuple[str, ...] = ()
    read_ahead: bool = True  # stream remote shards through a prefetching thread (see data.cache)
    pin_memory: bool = False  # page-locked batches (training on cuda): non-blocking host-to-device copies
    persistent_workers: bool = False  # keep the DataLoader workers across epochs (num_workers > 0)

    def plan(self, epoch: int, segments: tuple[EpochSegment, ...] = ()) -> EpochPlan:
        """This rank's plan of ``epoch``; after ``segments`` of it ran with other geometries, of its remainder."""
        sequence = None
        if segments:
            sequence = remaining_sequence(
                self.shard_sizes, segments, seed=self.seed, epoch=epoch, shuffle=self.shuffle
            )
        return plan_epoch(
            self.shard_sizes,
            seed=self.seed,
            epoch=epoch,
            world_size=self.world_size,
            rank=self.rank,
            num_workers=self.num_workers,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            shuffle_block_batches=self.shuffle_block_batches,
            sequence=sequence,
            segment=len(segments),
        )

    def segment(self, batches_consumed: int) -> EpochSegment:
        """This geometry's stretch of an epoch after every rank received ``batches_consumed`` batches (lockstep)."""
        return EpochSegment(
            self.world_size, self.num_workers, self.batch_size, self.shuffle_block_batches,
            (batches_consumed,) * self.world_size,
        )  # fmt: skip


def _runs(positions: list[int]) -> Iterator[tuple[int, int]]:
    """``[lo, hi)`` ranges of consecutive values of the ascending ``positions``."""
    start = 0
    for i in range(1, len(positions) + 1):
        if i == len(positions) or positions[i] != positions[i - 1] + 1:
            yield positions[start], positions[i - 1] + 1
            start = i


def _read_positions(spec: LoaderSpec, plan: EpochPlan, positions: list[int]) -> Iterator[tuple[int, ShardRead]]:
    """``(position, read)`` for the ascending global ``positions``, streaming each run of them shard after shard
    (an elastic remainder skips what was consumed before it)."""
    for lo, hi in _runs(positions):
        yield from _read_range(spec, plan, lo, hi)


def _read_range(spec: LoaderSpec, plan: EpochPlan, lo: int, hi: int) -> Iterator[tuple[int, ShardRead]]:
    """``(position, read)`` for global positions ``lo .. hi - 1``, streaming shard after shard."""
    storage = storage_for(spec.shard_urls[0], spec.storage_cfg) if spec.shard_urls else None
    position = lo
    while position < hi:
        shard, index = plan.locate(position)
        count = min(hi - position, spec.shard_sizes[shard] - index)
        reads = read_shard_samples(
            storage,
            spec.shard_urls[shard],
            index,
            count,
            keys=spec.shard_keys[shard],
            cache_dir=spec.cache_dir,
            version=spec.shard_sha256[shard],
            read_ahead=spec.read_ahead,
        )
        for offset, read in enumerate(reads):
            yield position + offset, read
        position += count


class _WorkerRun:
    """One worker's batches for one epoch, from batch ``first_batch`` on."""

    def __init__(self, spec: LoaderSpec, plan: EpochPlan, worker: WorkerPlan, epoch: int, first_batch: int) -> None:
        self.spec, self.plan, self.worker, self.epoch, self.first_batch = spec, plan, worker, epoch, first_batch
        self.last_good: dict[str, Any] | None = None
        self.reported: set[int] = set()

    def batches(self) -> Iterator[tuple[dict[str, Any] | None, dict[str, Any]]]:
        reads = _read_positions(self.spec, self.plan, self.worker.read_positions(self.first_batch))
        buffer: dict[int, ShardRead] = {}
        last_read = -1
        step = self.worker.block_batches
        for block_start in range(self.first_batch - self.first_batch % step, self.worker.num_batches, step):
            block = range(block_start, min(block_start + step, self.worker.num_batches))
            last_needed = max(p for b in block for p in self.worker.positions[b])
            while last_read < last_needed:
                last_read, read = next(reads)
                buffer[last_read] = read
            for b in block:
                if b >= self.first_batch:
                    try:
                        yield self._batch(b, buffer)
                    except UserError as e:  # re-raised by the trainer process as one line, not a worker traceback
                        yield None, {"error": str(e)}
                        return
            # The next block starts at or after this block's last position (padding reuses exactly that one).
            buffer = {p: r for p, r in buffer.items() if p >= last_needed}

    def _process(self, position: int, read: ShardRead) -> tuple[dict[str, Any] | None, str]:
        if read.members is None:
            return None, read.error
        try:
            sample = decode_sample(read.members, read.key, MEMBER_ORDER if not self.spec.train else TRAINING_KINDS)
            if not self.spec.train:
                sample["depth"] = _mask_depth_range(sample["depth"], self.spec.min_depth_m, self.spec.max_depth_m)
                return prepare_eval_sample(sample), ""
            height, width = sample["semantic"].shape
            spec = self.spec
            params = draw_params(
                sample_rng(spec.seed, self.epoch, position),
                height,
                width,
                scales=spec.scales,
                crop_height=spec.crop_height,
                crop_width=spec.crop_width,
                flip_prob=spec.flip_prob,
            )
            out = augment_sample(
                sample,
                params,
                crop_height=spec.crop_height,
                crop_width=spec.crop_width,
                divide_depth_by_scale=spec.divide_depth_by_scale,
                ignore_index=spec.ignore_index,
                min_depth_m=spec.min_depth_m,  # applied to the source window augmentation reads, not the whole map
                max_depth_m=spec.max_depth_m,
            )
            return out, ""
        except (UserError, KeyError, ValueError, TypeError) as e:
            return None, str(e).splitlines()[0] if str(e) else type(e).__name__

    def _batch(self, b: int, buffer: dict[int, ShardRead]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        positions, valid = self.worker.positions[b], list(self.worker.valid[b])
        processed: dict[int, dict[str, Any] | None] = {}
        corrupt: list[str] = []
        for position in dict.fromkeys(positions):
            read = buffer[position]
            processed[position], error = self._process(position, read)
            if processed[position] is None and position not in self.reported:
                self.reported.add(position)
                message = f"corrupt sample {read.key} in {read.url}: {error}"
                if self.spec.strict:
                    return None, {"error": f"{message} (data.strict=true; fix or rewrite the shard)"}
                log.warning("skipping %s", message)
                corrupt.append(message)
        items, keys = [], []
        good = [processed[p] for p in positions if processed[p] is not None]
        for i, position in enumerate(positions):
            item = processed[position]
            if item is None:  # keep the batch full: an invalid copy of a neighbour
                item = good[0] if good else self.last_good or self._blank()
                valid[i] = False
            items.append(item)
            keys.append(buffer[position].key)
        if good:
            self.last_good = good[-1]
        return self._collate(items, valid, keys), {"corrupt": corrupt}

    def _blank(self) -> dict[str, Any]:
        h, w = self.spec.crop_height, self.spec.crop_width
        return {
            "rgb": torch.zeros(3, h, w),
            "semantic": torch.full((h, w), self.spec.ignore_index, dtype=torch.long),
            "depth": torch.zeros(1, h, w),
            "instances": None,
            "camera": {"fx": 1.0, "fy": 1.0, "cx": (w - 1) / 2, "cy": (h - 1) / 2, "baseline": 1.0},
        }

    def _collate(self, items: list[dict[str, Any]], valid: list[bool], keys: list[str]) -> dict[str, Any]:
        shapes = {tuple(it["semantic"].shape) for it in items}
        if len(shapes) > 1:
            raise UserError(
                f"images of different sizes {sorted(shapes)} in one batch: set data.eval_batch_size=1 for this dataset"
            )
        fields = ("fx", "fy", "cx", "cy") + (("baseline",) if all("baseline" in it["camera"] for it in items) else ())
        camera = {k: torch.tensor([it["camera"][k] for it in items], dtype=torch.float64) for k in fields}
        if self.spec.depth_target == "disparity" and "baseline" not in camera:
            key = next(k for k, it in zip(keys, items) if "baseline" not in it["camera"])
            raise UserError(
                f"data.depth_target=disparity needs a stereo baseline in each sample's camera, and sample {key} has "
                "none (only Cityscapes shards have one): use data.depth_target=depth or inverse_depth"
            )
        depth_m = torch.stack([it["depth"] for it in items])
        semantic = torch.stack([it["semantic"] for it in items])
        intrinsics = (camera["fx"], camera["fy"], camera["cx"], camera["cy"])
        if self.spec.train:
            # Normals and contours feed only the 1/4-resolution intermediate heads: made on that grid, equal bitwise
            # to the objective's resize of the full-resolution maps, for a quarter of the normals' cost.
            size = intermediate_size(*semantic.shape[-2:])
            normals = normals_at_size(depth_m, *intrinsics, size)
            contour = contours_at_size(semantic, size, self.spec.ignore_index, self.spec.contour_width)
        else:  # evaluation scores full-resolution predictions
            normals = normals_from_depth(depth_m, *intrinsics)
            contour = contours_from_labels(semantic, self.spec.ignore_index, self.spec.contour_width)
        batch = {
            "rgb": torch.stack([it["rgb"] for it in items]),
            "semantic": semantic,
            "depth": depth_to_target(
                depth_m, self.spec.depth_target, baseline_m=camera.get("baseline"), fx=camera["fx"]
            ),
            "normals": normals,
            "contour": contour,
            "valid": torch.tensor(valid, dtype=torch.bool),
            "keys": keys,
        }
        if not self.spec.train:
            batch["instances"] = torch.stack(
                [
                    it["instances"] if it["instances"] is not None else torch.full_like(it["semantic"], -1)
                    for it in items
                ]
            )
            batch["camera"] = camera
        return batch


def _mask_depth_range(depth_m: np.ndarray, min_depth_m: float, max_depth_m: float) -> np.ndarray:
    """Metric depth (H, W) with everything outside (min_depth_m, max_depth_m) set to 0 (max 0 = no upper bound)."""
    valid = depth_m > min_depth_m
    if max_depth_m > 0:
        valid &= depth_m < max_depth_m
    return np.where(valid, depth_m, np.float32(0.0)).astype(np.float32, copy=False)


class _EpochDataset(IterableDataset):
    """The batches of one rank's epoch ``control[0]`` from its batch ``control[1]`` on.

    ``control`` is a shared-memory tensor the trainer process sets before each epoch, so that persistent
    workers, forked once, learn the epoch and resume position at the start of every epoch. ``segments`` (the
    earlier geometries of epoch ``segments_epoch``) are fixed at fork: the loader forks again when they change.
    """

    def __init__(
        self, spec: LoaderSpec, control: torch.Tensor, segments: tuple[EpochSegment, ...], segments_epoch: int
    ) -> None:
        super().__init__()
        self.spec, self.control, self.segments, self.segments_epoch = spec, control, segments, segments_epoch

    def __iter__(self) -> Iterator[tuple[dict[str, Any] | None, dict[str, Any]]]:
        info = get_worker_info()
        torch_worker = 0 if info is None else info.id
        num_logical = max(1, self.spec.num_workers)
        epoch, resume_from = (int(v) for v in self.control.tolist())
        plan = self.spec.plan(epoch, self.segments if epoch == self.segments_epoch else ())
        worker, first_batch = torch_worker, 0
        if resume_from:
            resume = plan.resume_point(resume_from)
            worker = resume.logical_worker(torch_worker, num_logical)
            first_batch = resume.skip_batches[worker]
        yield from _WorkerRun(self.spec, plan, plan.workers[worker], epoch, first_batch).batches()


class LoaderConfigError(UserError, ValueError):
    """A loader geometry that would drop or duplicate data (too many ranks, no samples, ...)."""


@dataclass
class LoaderStats:
    num_corrupt_skipped: int = 0
    corrupt: list[str] = field(default_factory=list)  # the first few messages


class ShardLoader:
    """Batches of one rank (docs/contracts.md). ``len()`` is the same on every rank.

    Each iteration yields the current epoch (set with ``set_epoch``) from its first batch, except the first
    iteration after ``load_state_dict``, which yields exactly the batches the saved run had not received yet
    (none when the saved epoch was complete). After an elastic ``load_state_dict`` that iteration yields this
    rank's share of the epoch's samples no rank had consumed (``num_batches_left`` of them).
    """

    def __init__(self, spec: LoaderSpec) -> None:
        self.spec = spec
        self.epoch = 0
        self.num_consumed = 0
        self.stats = LoaderStats()
        self._num_batches = spec.plan(0).num_batches
        self._resume_from = 0
        self._segments: tuple[EpochSegment, ...] = ()  # earlier geometries of self.epoch (elastic resume)
        self._plans: dict[tuple[int, tuple[EpochSegment, ...]], EpochPlan] = {}
        self._control = torch.zeros(2, dtype=torch.int64).share_memory_()  # epoch, resume position
        self._loader: DataLoader | None = None  # the persistent one, while its workers live

    def __len__(self) -> int:
        """Batches of a whole epoch, the same on every rank."""
        return self._num_batches

    @property
    def num_batches_left(self) -> int:
        """Batches the next iteration yields: the rest of the current epoch (all of it unless resumed)."""
        return max(0, self._plan().num_batches - max(self._resume_from, self.num_consumed))

    def _plan(self) -> EpochPlan:
        key = (self.epoch, self._segments)
        if key not in self._plans:
            self._plans = {key: self.spec.plan(self.epoch, self._segments)}
        return self._plans[key]

    @property
    def dataset_name(self) -> str:
        """The manifest's dataset ("cityscapes", "nyud", "synthetic", ...)."""
        return self.spec.dataset_name

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names by train id, from the manifest."""
        return self.spec.class_names

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate; a saved mid-epoch position survives only for its own epoch."""
        if epoch != self.epoch:
            self.epoch, self.num_consumed, self._resume_from, self._segments = epoch, 0, 0, ()

    def close(self) -> None:
        """End the persistent workers now (they also end with this loader or the process)."""
        iterator = getattr(self._loader, "_iterator", None)
        if iterator is not None:
            # what torch runs when the iterator is collected; a generator of ours may still hold a reference
            iterator._shutdown_workers()
        self._loader = None

    def _dataloader(self) -> DataLoader:
        spec = self.spec
        if self._loader is not None:
            return self._loader
        loader = DataLoader(
            _EpochDataset(spec, self._control, self._segments, self.epoch),
            batch_size=None,
            num_workers=spec.num_workers,
            in_order=True,
            pin_memory=spec.pin_memory,
            worker_init_fn=functools.partial(worker_init, os.getpid()) if spec.num_workers else None,
            persistent_workers=spec.persistent_workers and spec.num_workers > 0,
        )
        if loader.persistent_workers:
            self._loader = loader
        return loader

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.num_consumed, self._resume_from = self._resume_from, 0
        if self.num_consumed >= self._plan().num_batches:
            return
        self._control[0], self._control[1] = self.epoch, self.num_consumed  # read by the workers at their next epoch
        with stop_signals_held():
            batches = iter(self._dataloader())  # forks the workers, or restarts the persistent ones at this epoch
        for batch, info in batches:
            if "error" in info:
                raise UserError(info["error"])
            if info["corrupt"]:
                self.stats.num_corrupt_skipped += len(info["corrupt"])
                self.stats.corrupt.extend(info["corrupt"][: max(0, 20 - len(self.stats.corrupt))])
            self.num_consumed += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position: the batches of ``epoch`` the trainer has received so far (of the epoch's
        remainder after ``segments``, the geometries that ran earlier in it)."""
        spec = self.spec
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "batches_consumed": self.num_consumed,
            "seed": spec.seed,
            "world_size": spec.world_size,
            "rank": spec.rank,
            "num_workers": spec.num_workers,
            "batch_size": spec.batch_size,
            "shuffle_block_batches": spec.shuffle_block_batches,
            "dataset": spec.fingerprint,
            "segments": [dataclasses.asdict(seg) for seg in self._segments],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` (any rank's: the ranks of a job consume batches in lockstep) was taken.

        Same geometry: exactly the remaining batches of the uninterrupted run. A different world size, worker
        count, batch size or shuffle block in the middle of an epoch: the epoch continues with the samples no rank
        had consumed, spread over this geometry's ranks (logged). A different dataset, or a different seed mid-epoch
        (it orders the epoch), is a ValueError.
        """
        spec = self.spec
        if state.get("version") not in _READABLE_STATE_VERSIONS:
            raise ValueError(f"loader state version {state.get('version')} is not one of {_READABLE_STATE_VERSIONS}")
        if state["dataset"] != spec.fingerprint:
            raise ValueError(
                "loader state is from a different dataset (its shards differ): resume with the same manifest"
            )
        epoch, consumed = int(state["epoch"]), int(state["batches_consumed"])
        segments = tuple(
            EpochSegment(**{**seg, "batches_consumed": tuple(seg["batches_consumed"])})
            for seg in state.get("segments", ())
        )
        saved = dataclasses.replace(
            spec, world_size=int(state["world_size"]), rank=0, num_workers=int(state["num_workers"]),
            batch_size=int(state["batch_size"]), seed=int(state["seed"]),
            shuffle_block_batches=int(state.get("shuffle_block_batches", spec.shuffle_block_batches)),
        )  # fmt: skip
        mid_epoch = 0 < consumed < saved.plan(epoch, segments).num_batches
        if mid_epoch and saved.seed != spec.seed:
            raise ValueError(
                f"loader state has seed={saved.seed} mid-epoch, this loader has {spec.seed}: "
                f"set data.seed={saved.seed} to resume"
            )
        geometry = ("world_size", "num_workers", "batch_size", "shuffle_block_batches")
        if (segments or consumed) and any(getattr(saved, k) != getattr(spec, k) for k in geometry):
            if consumed:
                segments = (*segments, saved.segment(consumed))
            consumed = 0
            self.epoch, self._segments = epoch, segments
            left = len(remaining_sequence(spec.shard_sizes, segments, seed=spec.seed, epoch=epoch, shuffle=spec.shuffle))
            log.info(
                "elastic resume of epoch %d: %d of %d samples were consumed by %d rank(s); the other %d are spread "
                "over %d rank(s), %d batches each",
                epoch, sum(spec.shard_sizes) - left, sum(spec.shard_sizes), saved.world_size, left,
                spec.world_size, self._plan().num_batches,
            )  # fmt: skip
        else:
            self._segments = segments
        self.close()  # forked workers hold the old segments
        self.epoch, self.num_consumed = epoch, consumed
        self._resume_from = self.num_consumed


def _spec(
    data_cfg: DataConfig, world: World, manifest_url: str, storage_cfg: StorageConfig | None, train: bool
) -> LoaderSpec:
    manifest = read_manifest(manifest_url, storage_cfg)
    if manifest.ignore_index != data_cfg.ignore_index:
        raise UserError(
            f"{manifest_url} uses ignore index {manifest.ignore_index}: set data.ignore_index={manifest.ignore_index}"
        )
    digest = hashlib.sha256()
    for shard in manifest.shards:
        digest.update(f"{shard.name}\0{shard.num_samples}\0{shard.sha256}\n".encode())
    return LoaderSpec(
        shard_urls=tuple(manifest.shard_urls(manifest_url)),
        shard_sizes=tuple(s.num_samples for s in manifest.shards),
        shard_sha256=tuple(s.sha256 for s in manifest.shards),
        shard_keys=tuple(tuple(s.keys) for s in manifest.shards),
        fingerprint=digest.hexdigest()[:16],
        storage_cfg=storage_cfg,
        train=train,
        world_size=world.world_size,
        rank=world.rank,
        num_workers=data_cfg.num_workers,
        batch_size=data_cfg.batch_size if train else data_cfg.eval_batch_size,
        seed=data_cfg.seed,
        shuffle=data_cfg.shuffle if train else False,
        shuffle_block_batches=data_cfg.shuffle_block_batches,
        crop_height=data_cfg.crop_height,
        crop_width=data_cfg.crop_width,
        scales=tuple(data_cfg.scales),
        divide_depth_by_scale=data_cfg.divide_depth_by_scale,
        flip_prob=data_cfg.flip_prob,
        contour_width=data_cfg.contour_width,
        ignore_index=data_cfg.ignore_index,
        strict=data_cfg.strict,
        depth_target=data_cfg.depth_target,
        min_depth_m=data_cfg.min_depth_m,
        max_depth_m=data_cfg.max_depth_m,
        cache_dir=data_cfg.cache_dir,
        persistent_workers=data_cfg.persistent_workers and train,
        dataset_name=manifest.dataset,
        class_names=tuple(manifest.classes),
    )


def _build(
    data_cfg: DataConfig,
    world: World,
    url: str,
    storage_cfg: StorageConfig | None,
    train: bool,
    pin_memory: bool = False,
) -> ShardLoader:
    spec = dataclasses.replace(_spec(data_cfg, world, url, storage_cfg, train), pin_memory=pin_memory)
    try:
        return ShardLoader(spec)
    except ValueError as e:
        raise LoaderConfigError(f"{url}: {e}") from None


def build_train_loader(
    data_cfg: DataConfig,
    world: World,
    *,
    storage_cfg: StorageConfig | None = None,
    manifest_url: str | None = None,
    pin_memory: bool = False,
) -> ShardLoader:
    """This rank's training loader: shuffled, augmented crops of ``data.batch_size`` samples; ``pin_memory``:
    batches in page-locked memory (only when training on a GPU)."""
    url = manifest_url or data_cfg.train_manifest
    if not url:
        raise UserError(
            "data.train_manifest is not set: point it at a train.manifest.json written by `padnet-dist shard`"
        )
    return _build(data_cfg, world, url, storage_cfg, train=True, pin_memory=pin_memory)


def build_eval_loader(
    data_cfg: DataConfig, world: World, *, storage_cfg: StorageConfig | None = None, manifest_url: str | None = None
) -> ShardLoader:
    """This rank's evaluation loader: full resolution, no augmentation or shuffle, ``data.eval_batch_size``;
    batches add ``instances`` int64 (B, H, W) (-1 where none) and ``camera`` {fx, fy, cx, cy: float64 (B,)}, plus
    ``baseline`` (metres) when every sample of the batch has one."""
    url = manifest_url or data_cfg.val_manifest
    if not url:
        raise UserError("data.val_manifest is not set: point it at a val.manifest.json written by `padnet-dist shard`")
    return _build(data_cfg, world, url, storage_cfg, train=False)


__all__ = ["LoaderConfigError", "LoaderSpec", "LoaderStats", "ShardLoader", "build_eval_loader", "build_train_loader"]
