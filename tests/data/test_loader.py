"""The shard loader over real shards: coverage across a simulated world, exact resume, corrupt data, S3."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import tarfile
import time
from collections import Counter

import pytest
import torch
from tests.helpers.shards import INFO, data_config, make_sample, manifest_keys, write_dataset

from padnet_dist.data.cache import ReadAheadStream, cached_path, ensure_cached
from padnet_dist.data.loader import build_eval_loader, build_train_loader
from padnet_dist.data.writer import write_shards
from padnet_dist.errors import UserError
from padnet_dist.storage import storage_for
from padnet_dist.storage.local import LocalStorage
from padnet_dist.world import World

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")

SHARD_SIZES = [3, 5, 0, 1, 4]  # 13 samples


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    return write_dataset(str(tmp_path_factory.mktemp("shards") / "ds"), SHARD_SIZES)


def _loaders(url, world_size, build=build_train_loader, storage_cfg=None, **cfg):
    return [
        build(data_config(**cfg), World(rank=r, world_size=world_size), manifest_url=url, storage_cfg=storage_cfg)
        for r in range(world_size)
    ]


def _valid_keys(batches) -> list[str]:
    return [k for b in batches for k, v in zip(b["keys"], b["valid"].tolist()) if v]


def _assert_same_batches(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.keys() == b.keys()
        for name in a:
            if isinstance(a[name], torch.Tensor):
                assert torch.equal(a[name], b[name]), name
            elif isinstance(a[name], dict):
                assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name
            else:
                assert a[name] == b[name], name


@pytest.mark.parametrize("num_workers", [0, 2])
def test_every_sample_once_per_epoch_across_three_ranks(dataset, num_workers):
    loaders = _loaders(dataset, 3, num_workers=num_workers)
    assert len({len(loader) for loader in loaders}) == 1
    orders = []
    for epoch in (0, 1):
        seen: list[str] = []
        for loader in loaders:
            loader.set_epoch(epoch)
            batches = list(loader)
            assert len(batches) == len(loader)
            for b in batches:
                assert b["rgb"].shape == (2, 3, 8, 10) and b["rgb"].dtype == torch.float32
                assert b["semantic"].dtype == torch.int64 and b["depth"].shape == (2, 1, 8, 10)
                # normals and contours on the intermediate heads' grid, (8 // 4, 10 // 4)
                assert b["normals"].shape == (2, 3, 2, 2) and b["contour"].shape == (2, 1, 2, 2)
                assert set(b["contour"].unique().tolist()) <= {0.0, 1.0, 255.0}
            seen.extend(_valid_keys(batches))
        assert Counter(seen) == Counter(manifest_keys(dataset))
        orders.append(seen)
    assert orders[0] != orders[1], "shuffling gives each epoch its own order"


@pytest.mark.parametrize("num_workers", [0, 2])
def test_eval_loader_full_resolution_every_sample_once(dataset, num_workers):
    loaders = _loaders(dataset, 3, build=build_eval_loader, num_workers=num_workers)
    assert len({len(loader) for loader in loaders}) == 1
    seen = []
    for loader in loaders:
        batches = list(loader)
        assert len(batches) == len(loader)
        for b in batches:
            assert b["rgb"].shape == (2, 3, 12, 16) and b["instances"].dtype == torch.int64
            assert b["camera"]["fx"].tolist() == [20.0, 20.0]
        seen.extend(_valid_keys(batches))
    assert sorted(seen) == manifest_keys(dataset), "eval: no shuffle, every sample once"


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("num_consumed", [1, 3])
def test_mid_epoch_resume_yields_exactly_the_remaining_batches(dataset, num_workers, num_consumed):
    cfg = dict(num_workers=num_workers, batch_size=1, shuffle_block_batches=2)
    world = World(rank=1, world_size=2)
    uninterrupted = build_train_loader(data_config(**cfg), world, manifest_url=dataset)
    uninterrupted.set_epoch(2)
    want = list(uninterrupted)

    interrupted = build_train_loader(data_config(**cfg), world, manifest_url=dataset)
    interrupted.set_epoch(2)
    stream = iter(interrupted)
    got = [next(stream) for _ in range(num_consumed)]
    state = json.loads(json.dumps(interrupted.state_dict()))
    stream.close()
    _assert_same_batches(got, want[:num_consumed])

    resumed = build_train_loader(data_config(**cfg), world, manifest_url=dataset)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)
    _assert_same_batches(list(resumed), want[num_consumed:])
    resumed.set_epoch(3)
    assert len(list(resumed)) == len(resumed), "the next epoch starts from its beginning"


def test_resume_refuses_a_different_dataset_or_seed(dataset, tmp_path):
    loader = build_train_loader(data_config(), World(rank=0, world_size=2), manifest_url=dataset)
    other = write_dataset(str(tmp_path / "other"), [2, 2])
    with pytest.raises(ValueError, match="different dataset"):
        build_train_loader(data_config(), World(rank=0, world_size=2), manifest_url=other).load_state_dict(
            loader.state_dict()
        )
    next(iter(loader))
    with pytest.raises(ValueError, match="set data.seed=1"):
        build_train_loader(data_config(seed=5), World(rank=0, world_size=1), manifest_url=dataset).load_state_dict(
            loader.state_dict()
        )


def _consume(loaders, num_batches):
    """The first ``num_batches`` batches of every rank, and each rank's state after them (as saved: JSON)."""
    got, states = [], []
    for loader in loaders:
        stream = iter(loader)
        got.extend(next(stream) for _ in range(num_batches))
        states.append(json.loads(json.dumps(loader.state_dict())))
        stream.close()
    return got, states


@pytest.mark.parametrize(
    ("old", "new"),
    [((2, 2, 1), (1, 0, 1)), ((1, 0, 2), (2, 2, 2)), ((3, 1, 1), (2, 3, 2)), ((2, 2, 2), (4, 2, 1))],
)
def test_elastic_resume_finishes_the_epoch_with_every_sample_once(dataset, old, new):
    """(ranks, workers, batch) stopped mid-epoch, resumed with another geometry: the epoch's samples once each,
    equal batch counts per rank; the next epoch is a whole one of the new geometry."""
    epoch = 3
    before = _loaders(dataset, old[0], num_workers=old[1], batch_size=old[2])
    for loader in before:
        loader.set_epoch(epoch)
    got, states = _consume(before, len(before[0]) // 2)
    after = _loaders(dataset, new[0], num_workers=new[1], batch_size=new[2])
    for rank, loader in enumerate(after):
        loader.load_state_dict(states[rank % old[0]])  # a rank without a state of its own takes any: lockstep
        loader.set_epoch(epoch)  # a no-op: the restored epoch
    announced = [loader.num_batches_left for loader in after]
    remainder = [list(loader) for loader in after]
    assert len(set(announced)) == 1 and [len(r) for r in remainder] == announced
    assert Counter(_valid_keys(got) + _valid_keys([b for r in remainder for b in r])) == Counter(
        manifest_keys(dataset)
    )
    for loader in after:
        loader.set_epoch(epoch + 1)
    whole = [list(loader) for loader in after]
    assert all(len(w) == len(after[0]) for w in whole)
    assert Counter(_valid_keys([b for w in whole for b in w])) == Counter(manifest_keys(dataset))


def test_elastic_remainder_resumes_exactly_after_a_second_stop(dataset):
    """2 ranks -> 1 rank mid-epoch, stopped again: the saved remainder continues tensor-equal, then a 3rd geometry."""
    first = _loaders(dataset, 2, num_workers=2, batch_size=1)
    _, states = _consume(first, 2)
    straight = _loaders(dataset, 1, num_workers=2, batch_size=1)[0]
    straight.load_state_dict(states[0])
    want = list(straight)

    resumed = _loaders(dataset, 1, num_workers=2, batch_size=1)[0]
    resumed.load_state_dict(states[0])
    got, (state,) = _consume([resumed], 3)
    again = _loaders(dataset, 1, num_workers=2, batch_size=1)[0]
    again.load_state_dict(state)
    _assert_same_batches(got + list(again), want)

    third = _loaders(dataset, 3, num_workers=0, batch_size=1)
    for loader in third:
        loader.load_state_dict(state)
    rest = [b for loader in third for b in loader]
    seen = _valid_keys(_consume(first, 2)[0]) + _valid_keys(got) + _valid_keys(rest)
    assert Counter(seen) == Counter(manifest_keys(dataset))


@pytest.mark.parametrize("persistent", [True, False])
def test_persistent_workers_give_the_same_epochs_and_resume_exactly(dataset, persistent):
    """Workers kept across epochs yield what fresh workers do, epoch after epoch, and a mid-epoch resume too."""
    cfg = dict(num_workers=2, batch_size=1, persistent_workers=persistent)
    world = World(rank=1, world_size=2)
    reference = build_train_loader(data_config(num_workers=2, batch_size=1, persistent_workers=False), world,
                                   manifest_url=dataset)  # fmt: skip
    loader = build_train_loader(data_config(**cfg), world, manifest_url=dataset)
    for epoch in (0, 1, 2):
        reference.set_epoch(epoch)
        loader.set_epoch(epoch)
        stream = iter(loader)
        if epoch == 1:  # an epoch left unfinished (a trainer drops the batches that do not fill a step)
            next(stream)
            continue
        _assert_same_batches(list(stream), list(reference))
    workers = loader._loader._iterator._workers if persistent else []
    assert all(w.is_alive() for w in workers) and len(workers) == (2 if persistent else 0)
    loader.set_epoch(4)
    stream = iter(loader)
    got = [next(stream) for _ in range(2)]
    state = json.loads(json.dumps(loader.state_dict()))
    resumed = build_train_loader(data_config(**cfg), world, manifest_url=dataset)
    resumed.load_state_dict(state)
    reference.set_epoch(4)
    _assert_same_batches(got + list(resumed), list(reference))
    loader.close()
    resumed.close()
    for w in workers:
        w.join(timeout=30)
    assert not any(w.is_alive() for w in workers), "close() ends the persistent workers"


def _rewrite_member(path: str, suffix_kind: str, index: int, data: bytes | None) -> str:
    """Replace (or drop, when ``data`` is None) the ``suffix_kind`` member of the ``index``-th sample."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    keys = list(dict.fromkeys(m.name.split(".", 1)[0] for m, _ in members))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as out:
        for m, content in members:
            if m.name.startswith(f"{keys[index]}.{suffix_kind}."):
                if data is None:
                    continue
                content = data
            info = tarfile.TarInfo(m.name)
            info.size = len(content)
            out.addfile(info, io.BytesIO(content))
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    return keys[index]


@pytest.fixture
def damaged(tmp_path) -> tuple[str, list[str]]:
    """13 samples in 5 shards: a bad PNG in shard 0, a missing depth member in shard 1, shard 4 truncated."""
    url = write_dataset(str(tmp_path / "ds"), SHARD_SIZES)
    root = os.path.dirname(url)
    shards = sorted(f for f in os.listdir(root) if f.endswith(".tar"))
    bad = [_rewrite_member(os.path.join(root, shards[0]), "rgb", 1, b"\x89PNG not really")]
    bad.append(_rewrite_member(os.path.join(root, shards[1]), "depth", 2, None))
    with open(os.path.join(root, shards[-1]), "r+b") as f:
        f.truncate(os.path.getsize(f.name) // 2)
    return url, bad


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_samples_are_skipped_counted_and_padded(damaged, num_workers, caplog):
    url, bad = damaged
    loaders = _loaders(url, 3, num_workers=num_workers)
    seen = []
    for loader in loaders:
        batches = list(loader)
        assert len(batches) == len(loader) == len(loaders[0]), "equal batch counts despite corrupt samples"
        assert all(b["rgb"].shape[0] == 2 for b in batches)
        seen.extend(_valid_keys(batches))
    num_skipped = sum(loader.stats.num_corrupt_skipped for loader in loaders)
    assert not set(bad) & set(seen)
    assert len(seen) == len(set(seen)) == len(manifest_keys(url)) - num_skipped
    assert num_skipped >= len(bad) + 1, "the truncated shard loses at least one sample"
    messages = " ".join(m for loader in loaders for m in loader.stats.corrupt)
    assert all(k in messages for k in bad) and ".tar" in messages


def test_strict_mode_fails_on_the_first_corrupt_sample(damaged):
    url, _ = damaged
    loader = build_train_loader(data_config(strict=True, shuffle=False), World(), manifest_url=url)
    with pytest.raises(UserError, match=r"train0-.*\.tar") as info:
        list(loader)
    assert "\n" not in str(info.value)


def _upload(url: str, s3) -> str:
    root = os.path.dirname(url)
    storage = storage_for(s3.url(), s3.storage_cfg)
    for name in os.listdir(root):
        storage.put_file(os.path.join(root, name), s3.url(f"ds/{name}"))
    return s3.url(f"ds/{os.path.basename(url)}")


@pytest.mark.integration
def test_s3_manifest_reads_the_same_batches_as_the_local_copy(dataset, s3, tmp_path):
    s3_url = _upload(dataset, s3)
    for extra in ({}, {"cache_dir": str(tmp_path / "cache")}):
        local = _loaders(dataset, 2, num_workers=2)
        remote = _loaders(s3_url, 2, storage_cfg=s3.storage_cfg, num_workers=2, **extra)
        for a, b in zip(local, remote):
            _assert_same_batches(list(b), list(a))
    assert len([f for f in os.listdir(tmp_path / "cache") if f.endswith(".tar")]) == sum(1 for n in SHARD_SIZES if n)


def test_resume_after_a_completed_epoch_yields_nothing_more(dataset):
    loader = build_train_loader(data_config(), World(rank=0, world_size=2), manifest_url=dataset)
    loader.set_epoch(4)
    assert len(list(loader)) == len(loader)
    state = loader.state_dict()
    resumed = build_train_loader(data_config(), World(rank=0, world_size=2), manifest_url=dataset)
    resumed.load_state_dict(state)
    resumed.set_epoch(4)
    assert list(resumed) == []
    resumed.set_epoch(5)
    assert len(list(resumed)) == len(resumed)


def test_eval_passes_repeat_the_same_batches(dataset):
    loader = build_eval_loader(data_config(), World(rank=1, world_size=2), manifest_url=dataset)
    first = list(loader)
    _assert_same_batches(list(loader), first)


def test_more_ranks_than_samples_fails_loudly(tmp_path):
    url = write_dataset(str(tmp_path / "small"), [2, 1])
    with pytest.raises(ValueError, match="3 samples.*fewer ranks") as info:
        build_train_loader(data_config(), World(rank=0, world_size=4), manifest_url=url)
    assert isinstance(info.value, UserError) and url in str(info.value)


class _CountingStorage(LocalStorage):
    """Local storage standing in for a remote one; logs every download to a file."""

    def __init__(self, log_path: str) -> None:
        self.log_path = log_path

    def get_file(self, url: str, local_path: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(f"{url}\n")
        time.sleep(0.2)  # widen the race window
        super().get_file(url, local_path)


def _cache_one(args) -> bytes:
    storage, url, cache_dir = args
    with open(ensure_cached(storage, url, cache_dir), "rb") as f:
        return f.read()


def test_node_cache_downloads_once_when_processes_race(tmp_path):
    source = tmp_path / "remote.tar"
    source.write_bytes(os.urandom(100_000))
    storage = _CountingStorage(str(tmp_path / "downloads.log"))
    cache_dir = str(tmp_path / "cache")
    with multiprocessing.get_context("fork").Pool(4) as pool:
        contents = pool.map(_cache_one, [(storage, str(source), cache_dir)] * 4)
    assert all(c == source.read_bytes() for c in contents)
    assert (tmp_path / "downloads.log").read_text().splitlines() == [str(source)]
    assert [f for f in os.listdir(cache_dir) if not f.endswith(".lock")] == [
        os.path.basename(cached_path(cache_dir, str(source)))
    ]


def test_read_ahead_stream_returns_the_bytes_and_raises_source_errors():
    data = os.urandom(300_000)
    with ReadAheadStream(io.BytesIO(data), chunk_bytes=4096, num_chunks=2) as stream:
        assert stream.read(10) + stream.read() == data

    class Failing(io.BytesIO):
        def read(self, size=-1):
            if self.tell() >= 8192:
                raise OSError("connection reset")
            return super().read(size)

    with ReadAheadStream(Failing(data), chunk_bytes=4096) as stream, pytest.raises(OSError, match="reset"):
        stream.read()


def test_eval_batches_of_different_image_sizes_fail_with_one_line(tmp_path):
    out = str(tmp_path / "mixed")
    write_shards(
        [0, 1],
        lambda i: make_sample(i, height=12, width=16 + 4 * i),
        out_url=out,
        split="val",
        info=INFO,
        progress=False,
    )
    loader = build_eval_loader(data_config(num_workers=1), World(), manifest_url=f"{out}/val.manifest.json")
    with pytest.raises(UserError, match="eval_batch_size=1") as info:
        list(loader)
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def cityscapes_val(tmp_path_factory):
    """Real Cityscapes-layout frames (disparity edge values p = 0, 1, 2, 65535 in row 0) converted to shards."""
    from padnet_dist.cli import main
    from tests.helpers.raw_datasets import make_cityscapes_root

    base = tmp_path_factory.mktemp("city")
    truth = make_cityscapes_root(base / "root", split="val", cities=("lindau",), frames_per_city=2, size=(32, 64))
    out = base / "shards"
    assert main(["shard", "cityscapes", "--root", str(base / "root"), "--split", "val", "--out", str(out)]) == 0
    return str(out / "val.manifest.json"), truth


@pytest.mark.parametrize("target", ["depth", "disparity", "inverse_depth"])
def test_depth_target_and_valid_range_on_cityscapes_edge_values(cityscapes_val, target):
    from tests.helpers.raw_datasets import CITYSCAPES_EDGE_DISPARITIES

    manifest, truth = cityscapes_val
    key = sorted(truth)[0]
    cam = truth[key].camera
    bf = cam["baseline"] * cam["fx"]
    max_depth_m = bf * 200  # between p = 3 (bf * 128 m) and p = 2 (bf * 256 m, the farthest finite depth)
    cfg = data_config(eval_batch_size=1, depth_target=target, max_depth_m=max_depth_m)
    batch = next(iter(build_eval_loader(cfg, World(), manifest_url=manifest)))
    assert batch["keys"] == [key] and batch["camera"]["baseline"].item() == pytest.approx(cam["baseline"])
    p = torch.tensor(CITYSCAPES_EDGE_DISPARITIES, dtype=torch.float64)
    disparity = torch.where(p > 1, (p - 1) / 256, 0.0)
    disparity[2] = 0.0  # p = 2 lies beyond max_depth_m: invalid in every target
    depth_m = torch.where(disparity > 0, bf / disparity.clamp_min(1e-12), 0.0)
    want = {"depth": depth_m, "disparity": disparity, "inverse_depth": torch.where(depth_m > 0, 1 / depth_m, 0.0)}
    got = batch["depth"][0, 0, 0, : len(p)].double()
    torch.testing.assert_close(got, want[target], rtol=1e-6, atol=0)
    full = truth[key].depth_m
    in_range = (full > 0) & (full < max_depth_m)
    assert torch.equal(batch["depth"][0, 0] > 0, torch.from_numpy(in_range))
    assert torch.isfinite(batch["depth"]).all()
    # normals come from metric depth whatever the target
    reference = next(iter(build_eval_loader(data_config(eval_batch_size=1, max_depth_m=max_depth_m), World(),
                                            manifest_url=manifest)))
    assert torch.equal(batch["normals"], reference["normals"])


def test_disparity_without_a_stereo_baseline_is_one_line(dataset):
    loader = build_eval_loader(data_config(depth_target="disparity"), World(), manifest_url=dataset)
    with pytest.raises(UserError, match="data.depth_target=disparity needs a stereo baseline"):
        next(iter(loader))


def test_out_of_range_depth_carries_no_loss_gradient_or_metric(cityscapes_val):
    """p = 0, 1 and depths beyond data.max_depth_m (p = 2: bf * 256 m) are masked in the objective and the
    metrics; without the range the few farthest pixels dominate the Euclidean loss."""
    from padnet_dist.config.optim import LossConfig
    from padnet_dist.eval.metrics import DepthMetrics
    from padnet_dist.train.objective import compute_losses

    manifest, truth = cityscapes_val
    cam = truth[sorted(truth)[0]].camera
    max_depth_m = cam["baseline"] * cam["fx"] * 200

    def depth_loss(cfg) -> tuple[torch.Tensor, torch.Tensor, dict]:
        batch = next(iter(build_eval_loader(cfg, World(), manifest_url=manifest)))
        pred = torch.zeros_like(batch["depth"], requires_grad=True)
        loss = compute_losses({"final_depth": pred}, batch, LossConfig())["final_depth"]
        loss.backward()
        return loss, pred.grad, batch

    loss, grad, batch = depth_loss(data_config(eval_batch_size=1, max_depth_m=max_depth_m))
    valid = batch["depth"] > 0
    assert loss.item() == pytest.approx((batch["depth"][valid].double() ** 2).mean().item(), rel=1e-5)
    assert (grad[~valid] == 0).all() and (grad[valid] != 0).all()
    assert (grad[0, 0, 0, :3] == 0).all()  # p = 0, 1, 2
    metrics = DepthMetrics()
    metrics.update(torch.ones_like(batch["depth"]), batch["depth"])
    assert metrics.compute()["num_pixels"] == int(valid.sum())
    unbounded, _, _ = depth_loss(data_config(eval_batch_size=1))
    assert unbounded.item() > 10 * loss.item()
