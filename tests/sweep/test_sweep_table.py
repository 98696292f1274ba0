"""The sweep's rows come from the ablation presets' headers; its table puts mean ± spread beside the paper."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pytest

from padnet_dist.sweep.paper import COLUMNS, REPORTED, table_name
from padnet_dist.sweep.rows import SweepRowsError, rows_of, table_rows
from padnet_dist.sweep.table import cell, markdown, to_csv
from tests.helpers import REPO_ROOT

ABLATIONS = REPO_ROOT / "configs" / "ablations"


@pytest.mark.parametrize("table", ["Table 1", "Table 2", "Table 6"])
def test_every_reported_row_has_a_preset_in_the_papers_order(table: str) -> None:
    rows = table_rows(ABLATIONS, table)
    printed = [r.row for r in rows]
    # Table 6's MTDN-mds has two readings (two presets): each paper row appears, in the paper's order
    assert list(dict.fromkeys(printed)) == list(REPORTED[table])
    assert all(r.preset.parent == ABLATIONS and r.dataset for r in rows)


def test_one_file_serves_a_row_of_table_1_and_one_of_table_2() -> None:
    t1 = {r.preset.name for r in table_rows(ABLATIONS, "Table 1")}
    t2 = {r.preset.name for r in table_rows(ABLATIONS, "Table 2")}
    assert {"t1t2_c_de_sp.yaml", "t1t2_frontend_de_sp.yaml"} <= t1 & t2


@pytest.mark.parametrize(("given", "name"), [("1", "Table 1"), ("table2", "Table 2"), ("Table 6", "Table 6")])
def test_table_names(given: str, name: str) -> None:
    assert table_name(given) == name


def test_unknown_table_and_headerless_file_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--table 3: the paper's diagnostic tables are 1, 2, 6"):
        table_name("3")
    bare = tmp_path / "mine.yaml"
    bare.write_text("model: {variant: frontend}\n")
    with pytest.raises(SweepRowsError, match="mine.yaml: no '# paper: Table N | row' line"):
        rows_of([bare])
    with pytest.raises(SweepRowsError, match="nothere.yaml: no such ablation file"):
        rows_of([tmp_path / "nothere.yaml"])


def _metrics(rel: float, miou: float | None) -> dict:
    return {"depth": {"rel": rel, "log10": 0.1, "rms": 0.5, "delta1": 0.6, "delta2": 0.8, "delta3": 0.9},
            "semantic": {"miou": miou, "mean_acc": 0.5, "pixel_acc": 0.7}}  # fmt: skip


def test_cell_is_mean_and_sample_std_over_seeds_skipping_nulls() -> None:
    rel, miou = COLUMNS["Table 6"][0], COLUMNS["Table 6"][3]
    seeds = [_metrics(0.2, 0.4), _metrics(0.3, None), _metrics(0.4, 0.6)]
    c = cell(seeds, rel)
    assert (c.mean, c.num_seeds) == (pytest.approx(0.3, abs=1e-15), 3)
    assert c.spread == pytest.approx(0.1, abs=1e-15)  # sample std of 0.2, 0.3, 0.4
    c = cell(seeds, miou)
    assert (c.mean, c.spread, c.num_seeds) == (pytest.approx(0.5), pytest.approx(math.sqrt(0.02)), 2)
    assert math.isnan(cell([_metrics(0.2, 0.4)], rel).spread)


def test_markdown_and_csv_carry_ours_spread_and_the_paper() -> None:
    rows = table_rows(ABLATIONS, "Table 2")
    results = [(rows[0], [_metrics(0.2, 0.30), _metrics(0.2, 0.34)]), (rows[-1], [_metrics(0.2, 0.5)])]
    md = markdown("Table 2", results)
    assert "| Front-end + SP (baseline) | 2 | 0.320 ± 0.028 (0.291) |" in md
    assert "| PAD-Net (Distillation C + DE + SP) | 1 | 0.500 (0.331) |" in md
    parsed = list(csv.DictReader(io.StringIO(to_csv("Table 2", results))))
    assert [p["row"] for p in parsed] == ["Front-end + SP (baseline)", "PAD-Net (Distillation C + DE + SP)"]
    assert float(parsed[0]["semantic.miou"]) == pytest.approx(0.32)
    assert float(parsed[0]["semantic.miou.paper"]) == 0.291
    assert parsed[1]["semantic.miou.std"] == ""  # one seed: no spread


def test_overrides_after_rows_are_overrides() -> None:
    from padnet_dist.commands.sweep import split_rows

    assert split_rows(["a.yaml", "data.seed=3", "b.yml"], ["run.dir=x"]) == (
        ["a.yaml", "b.yml"],
        ["run.dir=x", "data.seed=3"],
    )


def test_a_tables_lines_follow_the_paper_whatever_order_the_rows_were_given_in() -> None:
    from padnet_dist.sweep.sweep import in_paper_order

    given = [Path("configs/ablations") / f"{stem}.yaml" for stem in ("t2_c_sp", "t1t2_c_de_sp", "t2_frontend_sp",
                                                                      "t1t2_frontend_de_sp", "t2_a_sp", "t2_b_sp")]  # fmt: skip
    rows = in_paper_order(rows_of([REPO_ROOT / p for p in given]), "Table 2")
    assert [r.preset.stem for r in rows] == ["t2_frontend_sp", "t1t2_frontend_de_sp", "t2_a_sp", "t2_b_sp", "t2_c_sp",
                                             "t1t2_c_de_sp"]  # fmt: skip
