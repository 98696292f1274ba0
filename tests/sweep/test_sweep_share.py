"""Which runs of a sweep share one phase 1: decided from the resolved configs of the real presets (pure planning)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from padnet_dist.config import load_config
from padnet_dist.model import build_model
from padnet_dist.sweep.plan import PHASE1_FROM, SweepRun, phase1_key, plan_runs, recorded_phase1_from, share_phase1
from padnet_dist.sweep.rows import table_rows
from tests.helpers import REPO_ROOT

ABLATIONS = REPO_ROOT / "configs" / "ablations"
SWEEP = "/sweeps/t12"
PADNET_ROWS = ("t1_a_de", "t1_b_de", "t1_c_de", "t1t2_c_de_sp", "t2_a_sp", "t2_b_sp", "t2_c_sp")


def _plan(tables: tuple[str, ...], seeds: list[int], dataset: str = "configs/nyud.yaml", started=None):
    rows = [row for table in tables for row in table_rows(ABLATIONS, table)]
    runs = plan_runs(
        rows, seeds=seeds, base_configs=[str(REPO_ROOT / dataset)], overrides=[f"run.dir={SWEEP}"], sweep_dir=SWEEP
    )
    configs = [load_config(r.config_files, r.overrides) for r in runs]
    return share_phase1(runs, configs, started), configs


def _sources(runs: list[SweepRun]) -> dict[str, str]:
    return {r.name: r.phase1_from for r in runs}


def test_tables_1_and_2_train_three_phase1s_per_seed_and_seeds_never_share() -> None:
    runs, configs = _plan(("Table 1", "Table 2"), seeds=[0, 1])
    assert len(runs) == 20  # 10 presets (two serve both tables) x 2 seeds
    sources = _sources(runs)
    for seed in (0, 1):
        owner = f"{SWEEP}/t1_a_de/seed{seed}"  # the first PAD-Net row of the first table
        assert sources[f"t1_a_de/seed{seed}"] == ""
        for stem in PADNET_ROWS[1:]:
            assert sources[f"{stem}/seed{seed}"] == owner
        assert sources[f"t1_frontend_de/seed{seed}"] == ""  # phase 1 on depth: shares with nobody
        assert sources[f"t1t2_frontend_de_sp/seed{seed}"] == ""
        assert sources[f"t2_frontend_sp/seed{seed}"] == f"{SWEEP}/t1t2_frontend_de_sp/seed{seed}"
    assert sum(not r.phase1_from for r in runs) == 6  # 3 phase-1 trainings per seed instead of 10
    for run in runs:  # a dependant runs with pipeline.phase1_from, the owners without
        given = [o for o in run.overrides if o.startswith(PHASE1_FROM)]
        assert given == ([f"{PHASE1_FROM}{run.phase1_from}"] if run.phase1_from else [])
        assert load_config(run.config_files, run.overrides).pipeline.phase1_from == run.phase1_from
    keys = {r.name: phase1_key(c) for r, c in zip(runs, configs, strict=True)}
    assert keys["t1_a_de/seed0"] != keys["t1_a_de/seed1"]  # data.seed is part of the key


def test_the_two_front_end_baselines_share_because_their_phase1_is_the_same_training() -> None:
    by_stem = {}
    for stem in ("t2_frontend_sp", "t1t2_frontend_de_sp", "t1_frontend_de"):
        cfg = load_config([REPO_ROOT / "configs/nyud.yaml", ABLATIONS / f"{stem}.yaml"])
        with torch.device("meta"):  # names and shapes only
            by_stem[stem] = build_model(cfg.model)
    sp, de_sp, de = by_stem["t2_frontend_sp"], by_stem["t1t2_frontend_de_sp"], by_stem["t1_frontend_de"]
    assert sp.phase_outputs(1) == de_sp.phase_outputs(1) == ("final_semantic",)
    assert de.phase_outputs(1) == ("final_depth",)
    shapes = {n: tuple(v.shape) for n, v in sp.state_dict().items()}
    assert {n: shapes[n] for n in sp.phase_state_names(1)} == {
        n: tuple(de_sp.state_dict()[n].shape) for n in de_sp.phase_state_names(1)
    }


def test_table_6_rows_share_one_phase1_per_seed_including_both_mtdn_mds_readings() -> None:
    runs, _ = _plan(("Table 6",), seeds=[0])
    owners = [r for r in runs if not r.phase1_from]
    assert len(owners) == 1 and {r.phase1_from for r in runs if r.phase1_from} == {owners[0].run_dir}


def test_rows_that_differ_in_what_phase1_trains_do_not_share() -> None:
    base = [REPO_ROOT / "configs/tiny.yaml", ABLATIONS / "t2_c_sp.yaml"]
    key = phase1_key(load_config(base))
    free = ["model.distillation=A", "model.distill_inputs=[depth]", "model.final_tasks=[depth]"]
    assert phase1_key(load_config(base, free)) == key
    assert phase1_key(load_config(base, ["phases.phase2.lr=0.1", "pipeline.eval_every=3", "run.dir=x"])) == key
    for other in ("model.width=64", "phases.phase1.epochs=3", "data.batch_size=4", "model.intermediate_tasks=[depth]"):
        assert phase1_key(load_config(base, [*free, other])) != key, other


def test_a_continued_sweep_keeps_what_each_started_run_began_with() -> None:
    fresh, _ = _plan(("Table 2",), seeds=[0])
    assert _sources(fresh)["t2_a_sp/seed0"] == "" and _sources(fresh)["t2_c_sp/seed0"] == f"{SWEEP}/t2_a_sp/seed0"
    # Table 1 ran first in this run.dir: t1t2_c_de_sp took its phase 1 from t1_a_de, which Table 2 does not have
    t1_owner = f"{SWEEP}/t1_a_de/seed0"
    started = {f"{SWEEP}/t1t2_c_de_sp/seed0": t1_owner, f"{SWEEP}/t1t2_frontend_de_sp/seed0": ""}
    runs, _ = _plan(("Table 2",), seeds=[0], started=started)
    sources = _sources(runs)
    assert sources["t1t2_c_de_sp/seed0"] == t1_owner
    for stem in ("t2_a_sp", "t2_b_sp", "t2_c_sp"):  # no new phase 1: they join the one already trained
        assert sources[f"{stem}/seed0"] == t1_owner
    # a started run that trains its own phase 1 keeps doing so, and becomes the owner of the fresh ones
    runs, _ = _plan(("Table 2",), seeds=[0], started={f"{SWEEP}/t2_b_sp/seed0": ""})
    sources = _sources(runs)
    assert sources["t2_b_sp/seed0"] == "" and sources["t2_a_sp/seed0"] == f"{SWEEP}/t2_b_sp/seed0"


@pytest.mark.parametrize(
    ("config", "expected"),
    [([], ""), (["--config", "a.yaml", "run.dir=/r"], ""), (["pipeline.phase1_from=/o/"], "/o")],
)
def test_the_recorded_phase1_source_is_read_from_the_config_of_pipeline_json(config, expected) -> None:
    assert recorded_phase1_from({"config": config}) == expected
    assert recorded_phase1_from(None) is None


def test_the_presets_exist_where_the_test_expects_them() -> None:
    assert all((ABLATIONS / f"{stem}.yaml").is_file() for stem in PADNET_ROWS)
    assert Path(REPO_ROOT / "configs/nyud.yaml").is_file()
