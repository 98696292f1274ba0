"""Stop signals that Slurm delivers to every process of a step do not break the loader; workers die with their rank.

Real DataLoader worker processes, real signals (os.kill), no mocks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest
from tests.helpers.shards import data_config, write_dataset

from padnet_dist.data.loader import build_eval_loader, build_train_loader
from padnet_dist.world import World

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    return write_dataset(str(tmp_path_factory.mktemp("shards") / "ds"), [4, 4, 4, 4])


@pytest.mark.parametrize("build", [build_train_loader, build_eval_loader], ids=["train", "eval"])
def test_sigterm_and_sigint_to_every_worker_leave_the_epoch_intact(dataset, build):
    def make():
        return build(data_config(num_workers=2, batch_size=1, eval_batch_size=1), World(), manifest_url=dataset)

    want = [b["keys"] for b in make()]
    before = {p.pid for p in psutil.Process().children()}
    got, signalled = [], set()
    for batch in make():
        got.append(batch["keys"])
        if len(got) == 2:  # mid-epoch, as scancel --signal=TERM or a preemption would
            workers = [p for p in psutil.Process().children() if p.pid not in before]
            assert len(workers) == 2
            for p in workers:
                # from another process, as slurmstepd sends it (torch's worker exits quietly when its parent does)
                for name in ("TERM", "INT"):
                    subprocess.run(["kill", f"-{name}", str(p.pid)], check=True)
                signalled.add(p.pid)
            time.sleep(0.5)  # let the signals land while the workers still have batches to produce
    assert got == want and len(got) == 16
    assert len(signalled) == 2


WORKERS_THEN = """
import sys, time
from tests.helpers.shards import data_config
from padnet_dist.data.loader import build_train_loader
from padnet_dist.world import World
loader = build_train_loader(data_config(num_workers=2, batch_size=1), World(), manifest_url=sys.argv[1])
batches = iter(loader)
next(batches)
print("ready", flush=True)
if sys.argv[2] == "sleep":
    time.sleep(600)
"""


def _rank(dataset: str, then: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), *sys.path])}
    return subprocess.Popen(
        [sys.executable, "-c", WORKERS_THEN, dataset, then], env=env, stdout=subprocess.PIPE, text=True
    )


def test_workers_die_when_their_rank_is_sigkilled(dataset):
    rank = _rank(dataset, "sleep")
    try:
        assert rank.stdout.readline().strip() == "ready"
        workers = psutil.Process(rank.pid).children()
        assert len(workers) == 2
    finally:
        rank.kill()
        rank.wait()
    # ignoring SIGTERM must not make workers outlive a rank that was SIGKILLed (or crashed)
    gone, alive = psutil.wait_procs(workers, timeout=3)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"workers {[p.pid for p in alive]} outlived their rank"


def test_a_rank_exits_while_its_workers_are_mid_epoch(dataset):
    # At exit multiprocessing SIGTERMs the workers of an unfinished epoch and joins them: the rank's own SIGTERM
    # still ends them, or the rank would hang there forever.
    rank = _rank(dataset, "exit")
    try:
        assert rank.wait(timeout=120) == 0
    finally:
        rank.kill()
