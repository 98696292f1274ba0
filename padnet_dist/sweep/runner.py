"""Drive a sweep's pipeline runs: up to ``parallel`` at once, each through its own coordinator and lease.

One process steps every open run's coordinator in turn, so rows run concurrently where the backend has room (Slurm
and Ray queue what they cannot place; locally the machine is the limit, so ``parallel`` defaults to one run at a
time). Re-running the same sweep continues it: each run continues from its ``pipeline.json``; a finished run is only
read. A run that fails out stops alone; the others go on, and the sweep reports it and exits 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from padnet_dist.pipeline.coordinator import EXIT_STOPPED
from padnet_dist.pipeline.driver import OpenRun, open_run
from padnet_dist.sweep.plan import SweepRun


def log(message: str) -> None:
    print(f"sweep: {message}", flush=True)


def drive_runs(
    runs: list[SweepRun],
    *,
    backend: str,
    parallel: int,
    poll_every_s: float,
    opener: Callable[[SweepRun], OpenRun] | None = None,
    on_end: Callable[[SweepRun, int], None] | None = None,
) -> dict[str, int]:
    """Run every run to its end; ``{run.name: exit code}`` (0 complete, 1 a job failed out, 130 interrupted).

    ``on_end(run, code)`` is called as each run that was driven here ends (the sweep rewrites its tables then). On
    an error (a run's lease held by another coordinator, or lost) every run opened here is closed before it is raised.
    """
    opener = opener or (lambda r: open_run(r.config_files, r.overrides, backend, label=r.name))
    waiting, active, codes = list(runs), {}, {}
    planned = {r.name: r for r in runs}
    try:
        while waiting or active:
            while waiting and (parallel <= 0 or len(active) < parallel):
                run = waiting.pop(0)
                opened = opener(run)
                opened.coordinator.attach()
                if opened.coordinator.complete:
                    opened.close()
                    codes[run.name] = 0
                    continue
                log(f"{run.name}: running ({run.run_dir})")
                active[run.name] = opened
            for name in list(active):
                opened = active[name]
                opened.heartbeat.check()
                failed = opened.coordinator.step()
                if failed is not None or opened.coordinator.complete:
                    code = 0 if failed is None else 1
                    log(f"{name}: complete" if code == 0 else f"{name}: {opened.coordinator.failure_message(failed)}")
                    opened.close()
                    codes[name] = code
                    del active[name]
                    if on_end is not None:
                        on_end(planned[name], code)
            if active:
                time.sleep(poll_every_s)
    except KeyboardInterrupt:
        for name, opened in active.items():
            codes[name] = opened.coordinator.interrupted()
            opened.close()
        codes.update({r.name: EXIT_STOPPED for r in waiting})
    except BaseException:
        for opened in active.values():
            opened.close()
        raise
    return codes
