"""The rows of a sweep: the ablation presets and the paper row each one claims to reproduce.

Each file in ``configs/ablations/`` starts with ``# paper: <Table N | Figure 5> | <row as printed> [| note]`` (a line
per row it reproduces; one file can serve a row of Table 1 and one of Table 2) and ``# dataset: <preset>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from padnet_dist.errors import UserError


@dataclass(frozen=True)
class Row:
    table: str  # "Table 1"
    row: str  # as the paper prints it
    note: str  # tells apart two readings of one row ("reading A: ..."); "" for most
    preset: Path  # the ablation file
    dataset: str  # the dataset preset it is meant for, e.g. "configs/nyud.yaml"

    @property
    def label(self) -> str:
        return f"{self.row} [{self.note}]" if self.note else self.row

    @property
    def run_name(self) -> str:
        """A directory name for this row's runs (the preset's stem: one file, one trained model)."""
        return self.preset.stem


class SweepRowsError(UserError, ValueError):
    """A row file without its ``# paper:`` header, or a table no file claims."""


def read_header(path: Path) -> tuple[list[tuple[str, str, str]], str]:
    """The ``# paper:`` claims (table, row, note) and the ``# dataset:`` preset of an ablation file."""
    claims, dataset = [], ""
    for line in path.read_text().splitlines():
        if line.startswith("# paper:"):
            fields = [f.strip() for f in line.removeprefix("# paper:").split("|")]
            if len(fields) < 2 or not fields[1]:
                raise SweepRowsError(f"{path}: '{line}' must read '# paper: Table N | row as printed [| note]'")
            claims.append((fields[0], fields[1], fields[2] if len(fields) > 2 else ""))
        elif line.startswith("# dataset:"):
            dataset = line.removeprefix("# dataset:").strip()
    return claims, dataset


def rows_of(paths: list[Path], table: str | None = None) -> list[Row]:
    """Every (file, claimed row) of ``paths``, restricted to ``table`` when given, in file order."""
    rows = []
    for path in paths:
        if not path.is_file():
            raise SweepRowsError(f"{path}: no such ablation file (see configs/ablations/)")
        claims, dataset = read_header(path)
        if not claims:
            raise SweepRowsError(f"{path}: no '# paper: Table N | row' line, so its row in the table is unknown")
        rows += [Row(t, r, n, path, dataset) for t, r, n in claims if table is None or t == table]
    return rows


def table_rows(ablations_dir: Path, table: str) -> list[Row]:
    """The rows of one paper table, in the paper's order where it has numbers, else by file name."""
    from padnet_dist.sweep.paper import REPORTED

    rows = rows_of(sorted(ablations_dir.glob("*.yaml")), table)
    if not rows:
        raise SweepRowsError(f"no file in {ablations_dir} claims a row of {table}")
    order = list(REPORTED[table])
    return sorted(rows, key=lambda r: (order.index(r.row) if r.row in order else len(order), r.note))
