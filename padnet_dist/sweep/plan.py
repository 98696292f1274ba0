"""Which pipeline runs a sweep is made of: one per ablation preset and seed, each in its own run directory, and
which of them share one phase 1.

Pure. A preset that serves a row of Table 1 and one of Table 2 is one trained model, so it is one run per seed
whichever tables ask for it; run directories are keyed by the preset's stem and the seed, which is also what lets
a sweep of Table 2 after one of Table 1 (same ``run.dir``) reuse the rows they share.

Phase 1 (front end + scene parsing, ``PADNet.phase_outputs(1)``) is the same training for every row whose resolved
config is the same apart from what phase 1 does not use (``phase1_key``): the 7 PAD-Net rows of Tables 1 and 2
differ only in distillation and final tasks, so per seed one of them trains phase 1 and the other six start their
phase 2 from its checkpoint (``pipeline.phase1_from``). Since every module is initialised from the seed and its own
name (``padnet_dist.model.padnet``), that phase 1 is bitwise the one each row would have trained itself.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from padnet_dist.config import Config
from padnet_dist.storage import join_url
from padnet_dist.sweep.rows import Row

PHASE1_FROM = "pipeline.phase1_from="


@dataclass(frozen=True)
class SweepRun:
    preset: str  # the ablation file's stem
    seed: int
    run_dir: str
    config_files: tuple[str, ...]  # the dataset config(s), then the ablation preset
    overrides: tuple[str, ...]  # the user's, then this run's run.dir and data.seed (and pipeline.phase1_from)
    phase1_from: str = ""  # the run dir whose phase 1 this run's phase 2 starts from ("": its own)

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
    user = [o for o in overrides if not o.startswith(("run.dir=", "data.seed=", PHASE1_FROM))]
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


def phase1_key(cfg: Config) -> str:
    """What phase 1 of ``cfg`` trains, as a string: equal keys, equal phase-1 training.

    The resolved config without what phase 1 does not read (``run.dir``, the coordinator's ``pipeline`` section,
    ``phases.phase2``, the model keys of ``padnet_dist.model.phase1.PHASE1_FREE_KEYS``) plus the phase-1 signature of
    the model built on the meta device (``phase_outputs(1)``, the names and shapes of what phase 1 trains).
    ``data.seed`` is part of it: different seeds never share.
    """
    from padnet_dist.model.phase1 import phase1_model_keys, phase1_signature

    tree = dataclasses.asdict(cfg)
    tree["run"].pop("dir")
    tree["phases"].pop("phase2")
    tree.pop("pipeline")
    tree["model"] = phase1_model_keys(cfg.model)
    tree["phase1"] = dataclasses.asdict(phase1_signature(cfg.model))
    return json.dumps(tree, sort_keys=True, default=str)


def recorded_phase1_from(state: Mapping | None) -> str | None:
    """Where a started run's phase 1 comes from, as its ``pipeline.json`` records it: the ``phase1_from`` run dir,
    "" (its own), or None when the run has not started."""
    if state is None:
        return None
    given = [a.removeprefix(PHASE1_FROM) for a in state.get("config", []) if a.startswith(PHASE1_FROM)]
    return given[-1].rstrip("/") if given else ""


def share_phase1(
    runs: Sequence[SweepRun], configs: Sequence[Config], started: Mapping[str, str | None] | None = None
) -> list[SweepRun]:
    """``runs`` with ``phase1_from`` set where another run trains the same phase 1 (equal ``phase1_key``).

    ``configs``: each run's resolved config; ``started``: run dir -> ``recorded_phase1_from`` of its ``pipeline.json``
    (a started run keeps what it began with). In a group of equal keys the owner is the phase 1 a started run of
    the group already uses, else the first run of the group (in ``runs``' order, i.e. row order) that trains its own;
    every run not started yet reuses the owner's. A started run that trains its own phase 1 goes on doing so.
    """
    started = started or {}
    groups: dict[str, list[int]] = {}
    for i, cfg in enumerate(configs):
        groups.setdefault(phase1_key(cfg), []).append(i)
    shared = list(runs)
    for members in groups.values():
        recorded = [started.get(runs[i].run_dir) for i in members]
        owner = next((r for r in recorded if r), None)  # a started dependant's owner (maybe outside this sweep)
        if owner is None:
            owner = next((runs[i].run_dir for i, r in zip(members, recorded) if r == ""), None)
        if owner is None:
            owner = runs[members[0]].run_dir
        for i, r in zip(members, recorded):
            source = r if r is not None else ("" if runs[i].run_dir == owner else owner)
            if source:
                shared[i] = dataclasses.replace(
                    runs[i], phase1_from=source, overrides=(*runs[i].overrides, f"{PHASE1_FROM}{source}")
                )
    return shared


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
