"""Shard and sample assignment over simulated worlds, in one process."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from padnet_dist.data.assignment import plan_epoch, round_robin_order

SHARDS = [5, 1, 7, 3, 0, 9]


def _plans(sizes, *, world_size, num_workers, batch_size, epoch=0, shuffle=True, block=2, seed=3):
    return [
        plan_epoch(
            sizes,
            seed=seed,
            epoch=epoch,
            world_size=world_size,
            rank=rank,
            num_workers=num_workers,
            batch_size=batch_size,
            shuffle=shuffle,
            shuffle_block_batches=block,
        )
        for rank in range(world_size)
    ]


def _received(plan):
    """(position, valid) of every sample in the order the trainer receives them."""
    out = []
    for worker, index in plan.batch_order:
        w = plan.workers[worker]
        out.extend(zip(w.positions[index], w.valid[index]))
    return out


def _check_world(sizes, world_size, num_workers, batch_size, epoch, shuffle):
    plans = _plans(
        sizes, world_size=world_size, num_workers=num_workers, batch_size=batch_size, epoch=epoch, shuffle=shuffle
    )
    total = sum(sizes)
    seen = Counter()
    for plan in plans:
        received = _received(plan)
        assert len(plan.batch_order) == plan.num_batches == plans[0].num_batches
        assert len(received) == plan.num_batches * batch_size
        real = [p for p, v in received if v]
        seen.update(real)
        num_padding = len(received) - len(real)
        # Padding fills the last batch only: less than one batch, and zero when the span fills the batches.
        assert num_padding == plan.num_batches * batch_size - (plan.span[1] - plan.span[0])
        assert num_padding < batch_size or (
            num_padding == batch_size and plan.span[1] - plan.span[0] < max(p.span[1] - p.span[0] for p in plans)
        )
        assert all(plan.span[0] <= p < plan.span[1] for p, _ in received)
        # Each worker streams one contiguous range.
        for w in plan.workers:
            flat = sorted({p for batch in w.positions for p in batch})
            assert flat == list(range(flat[0], flat[-1] + 1)) if flat else True
    assert seen == Counter(range(total)), "every real sample exactly once per epoch across the cluster"
    spans = [p.span[1] - p.span[0] for p in plans]
    assert max(spans) - min(spans) <= 1


@pytest.mark.parametrize("world_size", range(1, 9))
@pytest.mark.parametrize("num_workers", range(0, 5))
def test_exactly_once_equal_batches(world_size, num_workers):
    for batch_size, epoch, shuffle in itertools.product([1, 2, 3, 5], [0, 1, 2], [True, False]):
        _check_world(SHARDS, world_size, num_workers, batch_size, epoch, shuffle)


def test_exactly_once_random_geometries():
    rng = random.Random(0)
    for _ in range(150):
        sizes = [rng.randint(0, 12) for _ in range(rng.randint(1, 8))]
        if sum(sizes) == 0:
            continue
        world_size, num_workers, batch_size = rng.randint(1, 8), rng.randint(0, 4), rng.randint(1, 6)
        epoch, shuffle = rng.randint(0, 5), rng.random() < 0.5
        if world_size > sum(sizes):
            with pytest.raises(ValueError, match="ranks"):
                _plans(sizes, world_size=world_size, num_workers=num_workers, batch_size=batch_size)
            continue
        _check_world(sizes, world_size, num_workers, batch_size, epoch, shuffle)


def test_no_padding_when_batches_divide_evenly():
    for plan in _plans([4, 4, 4], world_size=3, num_workers=2, batch_size=2):
        assert all(all(v) for w in plan.workers for v in w.valid)


def test_deterministic_and_epochs_differ():
    kw = dict(world_size=2, num_workers=2, batch_size=2)
    a = [_received(p) for p in _plans(SHARDS, epoch=1, **kw)]
    b = [_received(p) for p in _plans(SHARDS, epoch=1, **kw)]
    c = [_received(p) for p in _plans(SHARDS, epoch=2, **kw)]
    assert a == b
    assert a != c
    unshuffled = [_received(p) for p in _plans(SHARDS, epoch=1, shuffle=False, **kw)]
    assert unshuffled == [_received(p) for p in _plans(SHARDS, epoch=2, shuffle=False, **kw)]


def test_locate_maps_positions_to_shards():
    plan = _plans(SHARDS, world_size=1, num_workers=0, batch_size=1)[0]
    by_shard = Counter(plan.locate(p) for p in range(sum(SHARDS)))
    assert set(by_shard.values()) == {1}
    assert {k for k, _ in by_shard} == {i for i, n in enumerate(SHARDS) if n}
    assert all(0 <= i < SHARDS[s] for s, i in by_shard)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(shard_sizes=[0, 0]), "no samples"),
        (dict(batch_size=0), "batch"),
        (dict(world_size=30), "fewer ranks"),
        (dict(num_workers=-1), "num_workers"),
    ],
)
def test_misconfiguration_fails_loudly(kwargs, match):
    args = dict(shard_sizes=SHARDS, seed=0, epoch=0, world_size=2, rank=0, num_workers=1, batch_size=2, shuffle=True)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        plan_epoch(args.pop("shard_sizes"), **args)


@pytest.mark.parametrize("num_workers", [1, 2, 3, 4])
def test_resume_point_reproduces_remaining_order(num_workers):
    plan = _plans(SHARDS, world_size=2, num_workers=num_workers, batch_size=2)[1]
    order = plan.batch_order
    for consumed in range(plan.num_batches + 1):
        resume = plan.resume_point(consumed)
        remaining = [w.num_batches - s for w, s in zip(plan.workers, resume.skip_batches)]
        torch_counts = [remaining[resume.logical_worker(j, num_workers)] for j in range(num_workers)]
        resumed = [
            (resume.logical_worker(j, num_workers), resume.skip_batches[resume.logical_worker(j, num_workers)] + i)
            for j, i in round_robin_order(torch_counts)
        ]
        assert resumed == order[consumed:]


class _Tagged(IterableDataset):
    def __init__(self, counts):
        self.counts = counts

    def __iter__(self):
        info = get_worker_info()
        worker = 0 if info is None else info.id
        for i in range(self.counts[worker]):
            yield torch.tensor([worker, i])


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("counts", [[3, 3], [3, 1, 2], [0, 2, 5], [4, 4, 3, 0]])
def test_round_robin_matches_torch_dataloader(counts):
    """The documented delivery order is what torch's multi-worker DataLoader actually does (in_order=True)."""
    loader = DataLoader(_Tagged(counts), batch_size=None, num_workers=len(counts), prefetch_factor=2)
    got = [tuple(t.tolist()) for t in loader]
    assert got == round_robin_order(counts)
