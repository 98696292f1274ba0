"""Every ablation config (paper Tables 1, 2 and 6) is valid with the NYUD-v2 preset and builds its variant."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from padnet_dist.config import load_config
from padnet_dist.model import build_model

REPO = Path(__file__).resolve().parents[2]
ABLATIONS = REPO / "configs" / "ablations"
TINY = ["model.backbone=resnet18", "model.width=16", "model.distill_channels=8", "model.aggregation_channels=8"]

# paper row -> (file, what the built model must be)
ROWS = {
    "T1 Front-end + DE": ("t1_frontend_de", "Front-end baseline (final DE)"),
    "T1 Front-end + DE + SP": ("t1t2_frontend_de_sp", "Front-end baseline (final DE+SP)"),
    "T1 PAD-Net A + DE": ("t1_a_de", "PAD-Net (distillation A; final DE;"),
    "T1 PAD-Net B + DE": ("t1_b_de", "PAD-Net (distillation B; final DE;"),
    "T1 PAD-Net C + DE": ("t1_c_de", "PAD-Net (distillation C; final DE;"),
    "T1 PAD-Net C + DE + SP": ("t1t2_c_de_sp", "PAD-Net (distillation C; final DE+SP;"),
    "T2 Front-end + SP": ("t2_frontend_sp", "Front-end baseline (final SP)"),
    "T2 Front-end + SP + DE": ("t1t2_frontend_de_sp", "Front-end baseline (final DE+SP)"),
    "T2 PAD-Net A + SP": ("t2_a_sp", "PAD-Net (distillation A; final SP;"),
    "T2 PAD-Net B + SP": ("t2_b_sp", "PAD-Net (distillation B; final SP;"),
    "T2 PAD-Net C + SP": ("t2_c_sp", "PAD-Net (distillation C; final SP;"),
    "T2 PAD-Net C + DE + SP": ("t1t2_c_de_sp", "PAD-Net (distillation C; final DE+SP;"),
    "T6 MTDN-mds": ("t6_mtdn_mds", "MTDN-mds (distillation C; final DE+SP; inputs depth,normals,semantic,contour task"),
    "T6 MTDN-inp0": (
        "t6_mtdn_inp0",
        "PAD-Net MTDN-inp0 (no distillation inputs; final DE+SP; intermediate depth,normals",
    ),
    "T6 MTDN-inp2": ("t6_mtdn_inp2", "PAD-Net (distillation C; final DE+SP; inputs depth,semantic predictions"),
    "T6 MTDN-inp3": ("t6_mtdn_inp3", "PAD-Net (distillation C; final DE+SP; inputs depth,normals,semantic predictions"),
    "T6 MTDN-full": (
        "t6_mtdn_full",
        "PAD-Net (distillation C; final DE+SP; inputs depth,normals,semantic,contour pred",
    ),
}


def test_every_file_maps_to_a_paper_row() -> None:
    assert {p.stem for p in ABLATIONS.glob("*.yaml")} == {f for f, _ in ROWS.values()}
    assert len([r for r in ROWS if r.startswith("T1")]) == 6 and len([r for r in ROWS if r.startswith("T2")]) == 6
    assert len([r for r in ROWS if r.startswith("T6")]) == 5


@pytest.mark.parametrize("row", list(ROWS))
def test_ablation_builds_with_the_nyud_preset(row: str) -> None:
    stem, description = ROWS[row]
    cfg = load_config([REPO / "configs" / "nyud.yaml", ABLATIONS / f"{stem}.yaml"], TINY)
    model = build_model(cfg.model).eval()
    assert model.describe().startswith(description)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert {f"final_{k}" for k in cfg.model.final_tasks} <= set(out)
    assert out[next(iter(out))].shape[0] == 1
