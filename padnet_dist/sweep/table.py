"""A sweep's result table: one line per row, mean and spread over seeds, next to the paper's numbers.

Pure: results in, Markdown and CSV text out. A row's result is the list of its seeds' metrics dicts (the
``metrics.json`` of its phase-2 evaluation, sections as `padnet-dist eval` writes them).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass

from padnet_dist.sweep.paper import COLUMNS, REPORTED, Column, reported
from padnet_dist.sweep.rows import Row


@dataclass(frozen=True)
class Cell:
    mean: float  # NaN when no seed has the value
    spread: float  # sample standard deviation over seeds; NaN with fewer than two
    num_seeds: int


def metric(metrics: dict, key: str) -> float:
    """``section.key`` of an eval metrics dict; NaN when absent or null (a class absent from the split)."""
    section, name = key.split(".", 1)
    value = metrics.get(section, {}).get(name)
    return math.nan if value is None else float(value)


def cell(per_seed: list[dict], column: Column) -> Cell:
    values = [v for v in (metric(m, column.metric) for m in per_seed) if not math.isnan(v)]
    if not values:
        return Cell(math.nan, math.nan, 0)
    spread = statistics.stdev(values) if len(values) > 1 else math.nan
    return Cell(math.fsum(values) / len(values), spread, len(values))


def _fmt(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.3f}"


def _ours(c: Cell) -> str:
    if c.num_seeds == 0:
        return "–"
    return _fmt(c.mean) if c.num_seeds < 2 else f"{c.mean:.3f} ± {c.spread:.3f}"


def title(table: str) -> str:
    """The table's caption: what "ours" and the parenthesised values are."""
    return f"{table} — ours: mean ± sample std over seeds" + (
        "; (the paper's reported value)" if REPORTED[table] else ""
    )


def text_cells(table: str, results: list[tuple[Row, list[dict]]]) -> tuple[list[str], list[list[str]]]:
    """Header and one line of text cells per row: method, seeds, then per column "ours (paper)"."""
    columns = COLUMNS[table]
    head = ["Method", "seeds"] + [f"{c.title} {'↓' if c.lower_is_better else '↑'}" for c in columns]
    lines = []
    for row, per_seed in results:
        paper = reported(table, row.row) or {}
        cells = [cell(per_seed, c) for c in columns]
        seeds = max((c.num_seeds for c in cells), default=0)
        values = [
            f"{_ours(c)} ({_fmt(paper[col.metric])})" if col.metric in paper else _ours(c)
            for c, col in zip(cells, columns, strict=True)
        ]
        lines.append([row.label, str(seeds), *values])
    return head, lines


def markdown(table: str, results: list[tuple[Row, list[dict]]]) -> str:
    """The table in Markdown: per column "ours (mean ± std over seeds)" and "paper"; a seeds column."""
    head, lines = text_cells(table, results)
    rows = [f"| {' | '.join(head)} |", f"|{'---|' * len(head)}", *(f"| {' | '.join(line)} |" for line in lines)]
    return "\n".join([f"**{title(table)}**", "", *rows, ""])


def to_csv(table: str, results: list[tuple[Row, list[dict]]]) -> str:
    """One line per row: mean, std and paper value of every column, and the number of seeds."""
    columns = COLUMNS[table]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["table", "row", "note", "preset", "seeds"]
    for c in columns:
        header += [c.metric, f"{c.metric}.std", f"{c.metric}.paper"]
    writer.writerow(header)
    for row, per_seed in results:
        paper = reported(table, row.row) or {}
        cells = [cell(per_seed, c) for c in columns]
        line = [table, row.row, row.note, row.preset.name, max((c.num_seeds for c in cells), default=0)]
        for c, col in zip(cells, columns, strict=True):
            line += [_csv(c.mean), _csv(c.spread), _csv(paper.get(col.metric, math.nan))]
        writer.writerow(line)
    return out.getvalue()


def _csv(value: float) -> str:
    return "" if math.isnan(value) else repr(value)
