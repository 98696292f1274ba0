"""``TrainHooks``: the two points where a launcher may take part in ``train(cfg, world)``.

A launcher that knows more than a signal handler can (Ray Train's preemption notice, a cluster's own stop
request) says so through ``should_stop``; one that shows progress elsewhere (Ray's dashboard and ``Result``)
hears of each committed checkpoint through ``on_commit``. The training loop stays one function: no callback
list, no events beyond these two. The defaults do nothing, so a launcher without hooks changes nothing.
"""

from __future__ import annotations


class TrainHooks:
    """Launcher hooks of the training loop. Subclass and override; both run on every rank.

    ``should_stop()`` is called exactly once per optimiser step on every rank, right before the ranks agree
    whether to stop (any rank's True stops all of them after that step, with a committed checkpoint). It may
    be a collective, since every rank calls it the same number of times.

    ``on_commit(url, step, metrics)`` is called on every rank after each checkpoint this run commits, with its
    URL, the optimiser step it holds and the newest logged metrics of this rank (loss terms, lr; floats). On
    rank 0 the checkpoint is committed when it is called; it may also be a collective.
    """

    def should_stop(self) -> bool:
        return False

    def on_commit(self, url: str, step: int, metrics: dict[str, float]) -> None:
        return None
