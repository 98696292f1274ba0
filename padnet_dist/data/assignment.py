"""Which samples each rank and DataLoader worker reads, in which order: a pure function of the job geometry.

The global sample sequence of an epoch is the concatenation of the shards, in an order permuted by
``(seed, epoch)`` when shuffling. It is cut into ``world_size`` contiguous spans whose sizes differ by at
most one. Every rank runs the same number of full batches, ``ceil(max_span / batch_size)``; the slots past
a rank's span are padding: copies of the rank's last real sample marked ``valid=False`` (fewer than one
batch of them, never more than needed to fill the last batch).

A rank's batches are split among its DataLoader workers as contiguous runs, so each worker streams one
contiguous range of the global sequence and each shard is read about once. Inside a worker, samples are
permuted within blocks of ``shuffle_block_batches`` batches by an RNG seeded with
``(seed, epoch, rank, worker, block)``: resuming needs only the number of batches already consumed.

The main process receives batches in PyTorch's IterableDataset order (``in_order=True``): round robin over
workers starting at worker 0, skipping workers that are exhausted. ``EpochPlan.batch_order`` states it.

Elastic resume: a run stopped in the middle of an epoch and resumed with another geometry (world size, workers,
batch size) continues that epoch with the samples no rank has consumed yet. The epoch is then a list of
``EpochSegment``s, each the geometry that ran and how many batches each of its ranks consumed;
``remaining_sequence`` is the global positions no segment consumed, in sequence order, and ``plan_epoch(...,
sequence=remaining, segment=len(segments))`` deals them out like a whole epoch: contiguous spans, equal batch
counts per rank, padding in the last batch. A rank whose span is empty (fewer samples left than ranks) runs the
same number of batches of padding. Nothing here reads files or the environment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WorkerPlan:
    """The batches one (logical) worker produces, in the order it produces them.

    ``positions[b][i]`` is the global sequence position of sample ``i`` of batch ``b``; ``valid[b][i]`` is
    False for padding copies.
    """

    worker: int
    positions: tuple[tuple[int, ...], ...]
    valid: tuple[tuple[bool, ...], ...]
    block_batches: int

    @property
    def num_batches(self) -> int:
        return len(self.positions)

    def read_range(self, first_batch: int = 0) -> tuple[int, int]:
        """The global range ``[lo, hi)`` that holds every sample of the batches from ``first_batch`` on.

        Starts at the block holding ``first_batch``: a resumed worker re-reads that block (its shuffle mixes
        the whole block) and skips everything before it.
        """
        needed = self.read_positions(first_batch)
        return (needed[0], needed[-1] + 1) if needed else (0, 0)

    def read_positions(self, first_batch: int = 0) -> list[int]:
        """The distinct global positions to read, ascending, for the batches from ``first_batch`` on.

        Contiguous for a whole epoch; with gaps where an elastic remainder skips samples already consumed.
        """
        first_block = first_batch // self.block_batches
        return sorted({p for batch in self.positions[first_block * self.block_batches :] for p in batch})

    def consumed_positions(self, num_batches: int) -> set[int]:
        """Real (not padding) positions of this worker's first ``num_batches`` batches."""
        return {
            p
            for batch, valid in zip(self.positions[:num_batches], self.valid[:num_batches])
            for p, v in zip(batch, valid)
            if v
        }


@dataclass(frozen=True)
class EpochPlan:
    """One rank's sample plan for one epoch."""

    shard_order: tuple[int, ...]  # shard indices (manifest order) in global sequence order
    shard_starts: tuple[int, ...]  # global position of the first sample of shard_order[i]
    shard_sizes: tuple[int, ...]  # manifest order
    span: tuple[int, int]  # this rank's real samples lie in global positions [start, end); (0, 0) when none
    num_batches: int
    batch_size: int
    workers: tuple[WorkerPlan, ...]

    @property
    def batch_order(self) -> list[tuple[int, int]]:
        """``(worker, index_in_worker)`` of each batch in the order the trainer receives them."""
        return round_robin_order([w.num_batches for w in self.workers])

    def locate(self, position: int) -> tuple[int, int]:
        """``(shard index in the manifest, sample index inside that shard)`` of a global position."""
        i = int(np.searchsorted(self.shard_starts, position, side="right")) - 1
        # Empty shards share a start with the next one: step over them.
        while (
            self.shard_sizes[self.shard_order[i]] == 0
            or position >= self.shard_starts[i] + self.shard_sizes[self.shard_order[i]]
        ):
            i += 1
        return self.shard_order[i], position - self.shard_starts[i]

    def resume_point(self, num_consumed: int) -> ResumePoint:
        """Where each worker restarts after the trainer consumed the first ``num_consumed`` batches.

        A fresh DataLoader deals batches round robin from its worker 0 again; making torch worker ``j``
        play logical worker ``(first_worker + j) % num_workers`` reproduces the uninterrupted order.
        """
        if not 0 <= num_consumed <= self.num_batches:
            raise ValueError(f"cannot resume after {num_consumed} batches of an epoch of {self.num_batches}")
        order = self.batch_order
        skips = [0] * len(self.workers)
        for worker, _ in order[:num_consumed]:
            skips[worker] += 1
        first_worker = order[num_consumed][0] if num_consumed < len(order) else 0
        return ResumePoint(first_worker=first_worker, skip_batches=tuple(skips))

    def consumed_positions(self, num_consumed: int) -> set[int]:
        """Real positions of the first ``num_consumed`` batches the trainer received (any delivery order)."""
        skips = self.resume_point(num_consumed).skip_batches
        return set().union(*(w.consumed_positions(n) for w, n in zip(self.workers, skips)))


@dataclass(frozen=True)
class EpochSegment:
    """A stretch of an epoch run with one geometry: ``batches_consumed[r]`` batches received by rank ``r``."""

    world_size: int
    num_workers: int
    batch_size: int
    shuffle_block_batches: int
    batches_consumed: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.batches_consumed) != self.world_size:
            raise ValueError(
                f"an epoch segment of {self.world_size} ranks needs {self.world_size} batch counts, "
                f"got {len(self.batches_consumed)}"
            )


def remaining_sequence(
    shard_sizes: Sequence[int], segments: Sequence[EpochSegment], *, seed: int, epoch: int, shuffle: bool
) -> tuple[int, ...]:
    """Global positions of epoch ``epoch`` that no rank of ``segments`` (oldest first) consumed, ascending."""
    sequence: tuple[int, ...] | None = None
    for index, seg in enumerate(segments):
        consumed: set[int] = set()
        for rank, num_consumed in enumerate(seg.batches_consumed):
            plan = plan_epoch(
                shard_sizes, seed=seed, epoch=epoch, world_size=seg.world_size, rank=rank,
                num_workers=seg.num_workers, batch_size=seg.batch_size, shuffle=shuffle,
                shuffle_block_batches=seg.shuffle_block_batches, sequence=sequence, segment=index,
            )  # fmt: skip
            consumed |= plan.consumed_positions(num_consumed)
        base = sequence if sequence is not None else range(sum(int(n) for n in shard_sizes))
        sequence = tuple(p for p in base if p not in consumed)
    return sequence if sequence is not None else tuple(range(sum(int(n) for n in shard_sizes)))


@dataclass(frozen=True)
class ResumePoint:
    first_worker: int  # logical worker played by torch worker 0
    skip_batches: tuple[int, ...]  # per logical worker: batches already consumed

    def logical_worker(self, torch_worker: int, num_workers: int) -> int:
        return (self.first_worker + torch_worker) % num_workers


def round_robin_order(num_batches_per_worker: Sequence[int], first_worker: int = 0) -> list[tuple[int, int]]:
    """PyTorch's in-order delivery for an IterableDataset: cycle over workers, skipping exhausted ones."""
    remaining = list(num_batches_per_worker)
    produced = [0] * len(remaining)
    order: list[tuple[int, int]] = []
    worker = first_worker
    while any(remaining):
        if remaining[worker]:
            order.append((worker, produced[worker]))
            produced[worker] += 1
            remaining[worker] -= 1
        worker = (worker + 1) % len(remaining)
    return order


def num_batches_per_rank(total_samples: int, world_size: int, batch_size: int) -> int:
    """Batches every rank runs per epoch (or per remainder of ``total_samples``): enough for the largest span."""
    return math.ceil(math.ceil(total_samples / world_size) / batch_size)


def plan_epoch(
    shard_sizes: Sequence[int],
    *,
    seed: int,
    epoch: int,
    world_size: int,
    rank: int,
    num_workers: int,
    batch_size: int,
    shuffle: bool,
    shuffle_block_batches: int = 1,
    sequence: Sequence[int] | None = None,
    segment: int = 0,
) -> EpochPlan:
    """The plan of one rank for one epoch. ``num_workers=0`` means loading in-process (one logical worker).

    ``sequence``: the global positions to deal out, in order (an elastic remainder, see ``remaining_sequence``);
    None = the whole epoch. ``segment``: the remainder's index in its epoch, mixed into the shuffle seeds.

    Raises ValueError for a geometry that would drop or duplicate data: no samples, ``batch_size < 1``,
    more ranks than samples (for a whole epoch), a rank outside the world.
    """
    sizes = tuple(int(n) for n in shard_sizes)
    total = sum(sizes)
    if any(n < 0 for n in sizes):
        raise ValueError(f"shard sample counts must be >= 0, got {list(sizes)}")
    if total == 0:
        raise ValueError("the dataset has no samples: check that the manifest lists non-empty shards")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}: set data.batch_size / data.eval_batch_size")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    if sequence is None and world_size > total:
        raise ValueError(
            f"{world_size} ranks but only {total} samples: every rank needs at least one; use fewer ranks or more data"
        )
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if shuffle_block_batches < 1:
        raise ValueError(f"shuffle_block_batches must be >= 1, got {shuffle_block_batches}")

    if shuffle:
        shard_order = tuple(int(i) for i in np.random.default_rng([seed, epoch]).permutation(len(sizes)))
    else:
        shard_order = tuple(range(len(sizes)))
    starts = tuple(int(s) for s in np.concatenate([[0], np.cumsum([sizes[i] for i in shard_order])[:-1]]))
    order_of = tuple(range(total)) if sequence is None else tuple(int(p) for p in sequence)
    if any(not 0 <= p < total for p in order_of):
        raise ValueError(f"a remaining sequence holds positions outside the epoch's {total} samples")
    num_left = len(order_of)

    base, extra = divmod(num_left, world_size)
    span_start = rank * base + min(rank, extra)
    span_end = span_start + base + (1 if rank < extra else 0)
    num_batches = num_batches_per_rank(num_left, world_size, batch_size)

    num_slots = num_batches * batch_size
    # padding repeats the span's last sample, or for an empty span (fewer samples left than ranks) its neighbour's
    pad_index = max(span_end, 1) - 1
    slot_positions = [order_of[span_start + i if span_start + i < span_end else pad_index] for i in range(num_slots)]
    slot_valid = [span_start + i < span_end for i in range(num_slots)]

    num_logical = max(1, num_workers)
    block = shuffle_block_batches if shuffle else 1
    workers = []
    first_batch = 0
    for worker in range(num_logical):
        count = num_batches // num_logical + (1 if worker < num_batches % num_logical else 0)
        positions, valid = [], []
        for block_index, block_first in enumerate(range(first_batch, first_batch + count, block)):
            block_last = min(block_first + block, first_batch + count)
            lo, hi = block_first * batch_size, block_last * batch_size
            order = np.arange(lo, hi)
            if shuffle:
                key = [seed, epoch, rank, worker, block_index] + ([segment] if segment else [])
                order = lo + np.random.default_rng(key).permutation(hi - lo)
            for b in range(block_last - block_first):
                chosen = order[b * batch_size : (b + 1) * batch_size]
                positions.append(tuple(slot_positions[s] for s in chosen))
                valid.append(tuple(slot_valid[s] for s in chosen))
        workers.append(WorkerPlan(worker, tuple(positions), tuple(valid), block))
        first_batch += count

    return EpochPlan(
        shard_order=shard_order,
        shard_starts=starts,
        shard_sizes=sizes,
        span=(order_of[span_start], order_of[span_end - 1] + 1) if span_end > span_start else (0, 0),
        num_batches=num_batches,
        batch_size=batch_size,
        workers=tuple(workers),
    )
