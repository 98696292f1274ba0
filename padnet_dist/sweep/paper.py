"""What the paper reports for its diagnostic tables (Xu et al., CVPR 2018, §4.2), and their columns.

Facts from the paper, typed here so a sweep prints its own numbers next to them. Table 1 is depth on NYUD-v2,
Table 2 scene parsing on NYUD-v2 (both AlexNet front end), Table 6 both tasks on NYUD-v2 (ResNet-50). Figure 5
(Cityscapes) has bars, not numbers, so a sweep of it has no paper column.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    title: str  # as the paper prints it
    metric: str  # section.key of `padnet-dist eval`'s metrics
    lower_is_better: bool


DEPTH = (
    Column("rel", "depth.rel", True),
    Column("log10", "depth.log10", True),
    Column("rms", "depth.rms", True),
    Column("δ<1.25", "depth.delta1", False),
    Column("δ<1.25²", "depth.delta2", False),
    Column("δ<1.25³", "depth.delta3", False),
)
PARSING = (
    Column("Mean IoU", "semantic.miou", False),
    Column("Mean Acc", "semantic.mean_acc", False),
    Column("Pixel Acc", "semantic.pixel_acc", False),
)

COLUMNS: dict[str, tuple[Column, ...]] = {
    "Table 1": DEPTH,
    "Table 2": PARSING,
    "Table 6": DEPTH[:3] + PARSING,
    "Figure 5": PARSING,
}

# row as printed -> values in the order of COLUMNS[table]
REPORTED: dict[str, dict[str, tuple[float, ...]]] = {
    "Table 1": {
        "Front-end + DE (baseline)": (0.265, 0.120, 0.945, 0.447, 0.745, 0.897),
        "Front-end + DE + SP (baseline)": (0.260, 0.117, 0.930, 0.467, 0.760, 0.905),
        "PAD-Net (Distillation A + DE)": (0.248, 0.112, 0.892, 0.513, 0.798, 0.921),
        "PAD-Net (Distillation B + DE)": (0.230, 0.099, 0.850, 0.591, 0.854, 0.953),
        "PAD-Net (Distillation C + DE)": (0.221, 0.094, 0.813, 0.619, 0.882, 0.965),
        "PAD-Net (Distillation C + DE + SP)": (0.214, 0.091, 0.792, 0.643, 0.902, 0.977),
    },
    "Table 2": {
        "Front-end + SP (baseline)": (0.291, 0.301, 0.612),
        "Front-end + SP + DE (baseline)": (0.294, 0.312, 0.615),
        "PAD-Net (Distillation A + SP)": (0.308, 0.365, 0.628),
        "PAD-Net (Distillation B + SP)": (0.317, 0.411, 0.638),
        "PAD-Net (Distillation C + SP)": (0.325, 0.432, 0.645),
        "PAD-Net (Distillation C + DE + SP)": (0.331, 0.448, 0.647),
    },
    "Table 6": {
        "MTDN-mds": (0.149, 0.063, 0.701, 0.474, 0.597, 0.727),
        "MTDN-inp0": (0.153, 0.069, 0.721, 0.465, 0.588, 0.713),
        "MTDN-inp2": (0.139, 0.064, 0.672, 0.481, 0.603, 0.729),
        "MTDN-inp3": (0.128, 0.059, 0.617, 0.490, 0.612, 0.739),
        "MTDN-full": (0.120, 0.055, 0.582, 0.502, 0.623, 0.752),
    },
    "Figure 5": {},
}

TABLES = tuple(COLUMNS)


def table_name(table: str) -> str:
    """``1`` / ``table1`` / ``Table 1`` / ``figure5`` -> the paper's name; a one-line error for anything else."""
    key = table.strip().lower().replace(" ", "")
    for name in TABLES:
        short = name.lower().replace(" ", "")
        if key in (short, short.removeprefix("table")):
            return name
    raise ValueError(f"--table {table}: the paper's diagnostic tables are 1, 2, 6 and figure5")


def reported(table: str, row: str) -> dict[str, float] | None:
    """The paper's numbers for ``row`` by metric key, or None where the paper prints none."""
    values = REPORTED[table].get(row)
    return None if values is None else {c.metric: v for c, v in zip(COLUMNS[table], values, strict=True)}
