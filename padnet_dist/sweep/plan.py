"""Which pipeline runs a sweep is made of: one per ablation preset and seed, each in its own run directory.

Pure. A preset that serves a row of Table 1 and one of Table 2 is one trained model, so it is one run per seed
whichever tables ask for it; run directories are keyed by the preset's stem and the seed, which is also what lets
a sweep of Table 2 after one of Table 1 (same ``run.dir``) reuse the rows they share.
"""

from __future__ import annotations

from dataclasses import dataclass

from padnet_dist.storage import join_url
from padnet_dist.sweep.rows import Row


@dataclass(frozen=True)
class SweepRun:
    preset: str  # the ablation file's stem
    seed: int
    run_dir: str
    config_files: tuple[str, ...]  # the dataset config(s), then the ablation preset
    overrides: tuple[str, ...]  # the user's, then this run's run.dir and data.seed

    @property
    def name(self) -> str:
        return f"{self.preset}/seed{self.seed}"


def plan_runs(
    rows: list[Row], *, seeds: list[int], base_configs: list[str], overrides: list[str], sweep_dir: str
) -> list[SweepRun]:
    """One run per distinct preset and seed, in row order, seeds innermost.

    ``data.seed`` seeds the model's initialisation, the data order and augmentation (``train.rng``), so seed ``s``
    is the whole run's randomness; everything else (data, schedule, config) is the same for every row.
    """
    if not seeds:
        raise ValueError("a sweep needs at least one seed")
    user = [o for o in overrides if not o.startswith(("run.dir=", "data.seed="))]
    runs, seen = [], set()
    for row in rows:
        if row.run_name in seen:
            continue
        seen.add(row.run_name)
        for seed in seeds:
            run_dir = join_url(sweep_dir, row.run_name, f"seed{seed}")
            runs.append(
                SweepRun(
                    preset=row.run_name,
                    seed=seed,
                    run_dir=run_dir,
                    config_files=(*base_configs, str(row.preset)),
                    overrides=(*user, f"run.dir={run_dir}", f"data.seed={seed}"),
                )
            )
    return runs


def final_metrics(state: dict) -> dict | None:
    """The metrics of a finished run's final phase-2 evaluation (PAD-Net, not its nested baseline), or None."""
    evals = [
        rec
        for name, rec in state.get("jobs", {}).items()
        if rec.get("kind") == "eval" and rec.get("phase") == 2 and not name.startswith("baseline-")
        and rec.get("state") == "succeeded" and rec.get("metrics")
    ]  # fmt: skip
    if not evals:
        return None
    return max(evals, key=lambda rec: rec.get("step") or 0)["metrics"]
