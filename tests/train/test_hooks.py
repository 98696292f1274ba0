"""``TrainHooks``: a launcher's stop request ends the run after that step with a committed checkpoint, and the
launcher hears of every commit. Runs ``train(cfg, world)`` in this process on one rank."""

from __future__ import annotations

from padnet_dist.launch.env import free_port
from padnet_dist.storage import storage_for
from padnet_dist.train import checkpoint, train
from padnet_dist.train.hooks import TrainHooks
from padnet_dist.world import World


class StopAtStep(TrainHooks):
    def __init__(self, stop_step: int) -> None:
        self.stop_step = stop_step
        self.num_calls = 0
        self.commits: list[tuple[str, int, dict]] = []

    def should_stop(self) -> bool:
        self.num_calls += 1
        return self.num_calls >= self.stop_step

    def on_commit(self, url: str, step: int, metrics: dict[str, float]) -> None:
        self.commits.append((url, step, metrics))


def test_a_stop_request_commits_after_that_step_and_each_commit_is_reported(tiny_cfg, tmp_path):
    # 8 steps per epoch; a periodic commit at step 2, the launcher asks to stop during step 3
    cfg = tiny_cfg("run.checkpoint_every_steps=2", run_dir=str(tmp_path / "run"))
    hooks = StopAtStep(3)
    summary = train(cfg, World(master_port=free_port()), hooks=hooks)

    assert summary["step"] == 3 and summary["stopped_by_signal"] and not summary["finished"]
    assert hooks.num_calls == 3  # once per optimiser step, the last one being the step that stopped
    phase_dir = checkpoint.phase_dir(cfg.run.dir, 1)
    committed = checkpoint.list_committed(phase_dir, storage_for(cfg.run.dir))
    assert (
        [(url, step) for url, step, _ in hooks.commits]
        == [(u, s) for s, u in committed]
        == [
            (checkpoint.checkpoint_url(phase_dir, 2), 2),
            (checkpoint.checkpoint_url(phase_dir, 3), 3),
        ]
    )
    metrics = hooks.commits[-1][2]
    assert metrics["step"] == 3 and {"total", "inter_semantic"} <= set(metrics)

    resumed = train(cfg, World(master_port=free_port()))  # no hooks: nothing changes for other launchers
    assert resumed["resumed_from"] == checkpoint.checkpoint_url(phase_dir, 3) and resumed["finished"]
