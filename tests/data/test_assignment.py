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


def _segment_plans(sizes, segments, *, world_size, num_workers, batch_size, epoch=1, shuffle=True, block=2, seed=3):
    from padnet_dist.data.assignment import remaining_sequence

    sequence = remaining_sequence(sizes, segments, seed=seed, epoch=epoch, shuffle=shuffle)
    plans = [
        plan_epoch(
            sizes, seed=seed, epoch=epoch, world_size=world_size, rank=rank, num_workers=num_workers,
            batch_size=batch_size, shuffle=shuffle, shuffle_block_batches=block, sequence=sequence,
            segment=len(segments),
        )
        for rank in range(world_size)
    ]  # fmt: skip
    return sequence, plans


def _consumed_by(plans, num_consumed):
    """Real positions the trainers of ``plans`` received in their first ``num_consumed`` batches, with repeats."""
    seen = Counter()
    for plan in plans:
        received = _received(plan)[: num_consumed * plan.batch_size]
        seen.update(p for p, v in received if v)
    return seen


def _check_elastic(sizes, old, new, stop_at, batch_sizes, *, shuffle=True, epoch=1):
    """A world ``old`` = (ranks, workers) stopped after ``stop_at`` of its batches, resumed as ``new``."""
    from padnet_dist.data.assignment import EpochSegment

    total = sum(sizes)
    first = _plans(sizes, world_size=old[0], num_workers=old[1], batch_size=batch_sizes[0], epoch=epoch,
                   shuffle=shuffle)  # fmt: skip
    stop_at = min(stop_at, first[0].num_batches)
    before = _consumed_by(first, stop_at)
    segment = EpochSegment(old[0], old[1], batch_sizes[0], 2, (stop_at,) * old[0])
    sequence, plans = _segment_plans(sizes, [segment], world_size=new[0], num_workers=new[1],
                                     batch_size=batch_sizes[1], epoch=epoch, shuffle=shuffle)  # fmt: skip
    after = _consumed_by(plans, plans[0].num_batches if plans else 0)
    assert before + after == Counter(range(total)), "every sample exactly once over the two segments"
    assert sorted(sequence) == sorted(set(range(total)) - set(before))
    assert len({p.num_batches for p in plans}) == 1, "equal batch counts per rank"
    num_real = [sum(v for _, v in _received(p)) for p in plans]
    assert max(num_real) - min(num_real) <= 1, "the remainder is spread evenly"
    # padding only fills the last batch of the fullest ranks (a shorter rank may pad one more sample)
    assert plans[0].num_batches * batch_sizes[1] - max(num_real) < batch_sizes[1]
    return sequence, plans


@pytest.mark.parametrize("old_world", range(1, 9))
@pytest.mark.parametrize("new_world", range(1, 9))
def test_elastic_resume_sees_every_remaining_sample_once(old_world, new_world):
    """Every pair of world sizes 1-8, workers 0-4 on both sides, uneven shards, stopped anywhere in the epoch."""
    for old_workers, new_workers in itertools.product(range(5), range(5)):
        batch_sizes = [(2, 2), (3, 1), (1, 4)][(old_workers + new_workers) % 3]
        num_batches = _plans(SHARDS, world_size=old_world, num_workers=0, batch_size=batch_sizes[0])[0].num_batches
        for stop_at in {0, 1, num_batches // 2, num_batches - 1, num_batches}:
            _check_elastic(SHARDS, (old_world, old_workers), (new_world, new_workers), stop_at, batch_sizes)


def test_elastic_resume_random_geometries_and_repeated_changes():
    """Three segments in one epoch (e.g. 4 ranks -> 2 after a node loss -> 3), random shards and geometries."""
    from padnet_dist.data.assignment import EpochSegment

    rng = random.Random(1)
    for _ in range(200):
        sizes = [rng.randint(0, 9) for _ in range(rng.randint(1, 7))]
        total = sum(sizes)
        if total < 8:
            continue
        shuffle, epoch = rng.random() < 0.7, rng.randint(0, 3)
        segments, seen = [], Counter()
        for _segment in range(rng.randint(1, 3)):
            world, workers, batch = rng.randint(1, 8), rng.randint(0, 4), rng.randint(1, 4)
            sequence, plans = _segment_plans(sizes, segments, world_size=world, num_workers=workers,
                                             batch_size=batch, epoch=epoch, shuffle=shuffle)  # fmt: skip
            assert sorted(sequence) == sorted(set(range(total)) - set(seen))
            assert len({p.num_batches for p in plans}) == 1
            stop_at = rng.randint(0, plans[0].num_batches)
            seen += _consumed_by(plans, stop_at)
            segments.append(EpochSegment(world, workers, batch, 2, (stop_at,) * world))
        world, workers, batch = rng.randint(1, 8), rng.randint(0, 4), rng.randint(1, 4)
        _, plans = _segment_plans(sizes, segments, world_size=world, num_workers=workers, batch_size=batch,
                                  epoch=epoch, shuffle=shuffle)  # fmt: skip
        seen += _consumed_by(plans, plans[0].num_batches)
        assert seen == Counter(range(total))


def test_elastic_remainder_is_spread_evenly_and_read_in_runs():
    """2 ranks stopped half way, resumed on 1: the rank reads the two unread halves, skipping the consumed ones."""
    sequence, plans = _check_elastic([4, 4, 4, 4], (2, 0), (1, 2), 2, (2, 2), shuffle=False)
    assert sequence == (4, 5, 6, 7, 12, 13, 14, 15)
    (plan,) = plans
    assert plan.num_batches == 4
    assert [w.read_positions() for w in plan.workers] == [[4, 5, 6, 7], [12, 13, 14, 15]]
    # 1 -> 3 ranks with fewer samples left than ranks: the empty rank runs a batch of padding
    sequence, plans = _check_elastic([5], (1, 0), (3, 0), 2, (2, 1), shuffle=False)
    assert sequence == (4,)
    assert [p.num_batches for p in plans] == [1, 1, 1]
    assert [_received(p)[0][1] for p in plans] == [True, False, False]


def test_elastic_remainder_resumes_exactly_inside_its_segment():
    """A remainder interrupted again with the same geometry continues by ``resume_point``, as a whole epoch does."""
    from padnet_dist.data.assignment import EpochSegment

    segments = [EpochSegment(3, 2, 2, 2, (2, 2, 2))]
    _, plans = _segment_plans(SHARDS, segments, world_size=2, num_workers=3, batch_size=2)
    plan = plans[1]
    order = plan.batch_order
    for consumed in range(plan.num_batches + 1):
        resume = plan.resume_point(consumed)
        assert sum(resume.skip_batches) == consumed
        assert plan.consumed_positions(consumed) == {
            p for w, i in order[:consumed] for p, v in zip(plan.workers[w].positions[i], plan.workers[w].valid[i]) if v
        }
