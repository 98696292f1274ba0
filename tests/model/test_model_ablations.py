"""Every ablation preset names the paper row it reproduces, and builds that row's variant on that row's backbone.

Each file in ``configs/ablations/`` starts with ``# paper: <Table N | Figure 5> | <row as printed> [| note]`` (one
line per row it reproduces) and ``# dataset: configs/<preset>.yaml``. The rows and what each one is are typed here
from the paper (§4.2, Tables 1, 2 and 6, Figure 5), independently of the presets, so a preset that drifts from its
claim fails.
"""

from __future__ import annotations

import json

import pytest
import torch

from padnet_dist.cli import main
from padnet_dist.config import load_config
from padnet_dist.model import build_model
from padnet_dist.sweep.rows import read_header
from tests.helpers import REPO_ROOT

ABLATIONS = REPO_ROOT / "configs" / "ablations"
TINY = ["model.width=16", "model.distill_channels=8", "model.aggregation_channels=8"]
ALL = "depth,normals,semantic,contour"
NYUD, CITY = "configs/nyud.yaml", "configs/cityscapes.yaml"

# Tables 1 and 2: AlexNet on NYUD-v2 (§4.2). Figure 5: ResNet-50 on Cityscapes (its caption). Table 6: ResNet-50 on
# NYUD-v2 (its MTDN-full row is Table 3/4's PAD-Net-ResNet50).
SETTING = {"Table 1": (NYUD, "AlexNet"), "Table 2": (NYUD, "AlexNet"), "Figure 5": (CITY, "ResNet-50")}
SETTING["Table 6"] = (NYUD, "ResNet-50")


def _padnet(distillation: str, finals: str, inputs: str = ALL, fed: str = "predictions") -> str:
    return f"PAD-Net (distillation {distillation}; final {finals}; inputs {inputs} {fed}; intermediate {ALL})"


_TABLE2_ROWS = {
    "Front-end + SP (baseline)": "Front-end baseline (final SP)",
    "Front-end + SP + DE (baseline)": "Front-end baseline (final DE+SP)",
    "PAD-Net (Distillation A + SP)": _padnet("A", "SP"),
    "PAD-Net (Distillation B + SP)": _padnet("B", "SP"),
    "PAD-Net (Distillation C + SP)": _padnet("C", "SP"),
    "PAD-Net (Distillation C + DE + SP)": _padnet("C", "DE+SP"),
}
# (table, row as printed, note) -> the model's describe() without its backbone suffix
ROWS: dict[tuple[str, str, str], str] = {
    ("Table 1", "Front-end + DE (baseline)", ""): "Front-end baseline (final DE)",
    ("Table 1", "Front-end + DE + SP (baseline)", ""): "Front-end baseline (final DE+SP)",
    ("Table 1", "PAD-Net (Distillation A + DE)", ""): _padnet("A", "DE"),
    ("Table 1", "PAD-Net (Distillation B + DE)", ""): _padnet("B", "DE"),
    ("Table 1", "PAD-Net (Distillation C + DE)", ""): _padnet("C", "DE"),
    ("Table 1", "PAD-Net (Distillation C + DE + SP)", ""): _padnet("C", "DE+SP"),
    **{("Table 2", row, ""): variant for row, variant in _TABLE2_ROWS.items()},
    **{("Figure 5", row, ""): variant for row, variant in _TABLE2_ROWS.items()},
    ("Table 6", "MTDN-mds", "reading A: distillation fed task features"): (
        f"MTDN-mds (distillation C; final DE+SP; inputs {ALL} task features; intermediate {ALL})"
    ),
    ("Table 6", "MTDN-mds", "reading B: no intermediate supervision"): (
        f"PAD-Net (distillation C; final DE+SP; inputs {ALL} predictions; intermediate {ALL} unsupervised)"
    ),
    ("Table 6", "MTDN-inp0", ""): f"PAD-Net MTDN-inp0 (no distillation inputs; final DE+SP; intermediate {ALL})",
    ("Table 6", "MTDN-inp2", ""): _padnet("C", "DE+SP", "depth,semantic"),
    ("Table 6", "MTDN-inp3", ""): _padnet("C", "DE+SP", "depth,normals,semantic"),
    ("Table 6", "MTDN-full", ""): _padnet("C", "DE+SP"),
}


PRESETS = sorted(p.stem for p in ABLATIONS.glob("*.yaml"))


def test_every_paper_row_has_exactly_one_preset_and_every_preset_a_known_row() -> None:
    claimed = [row for stem in PRESETS for row in read_header(ABLATIONS / f"{stem}.yaml")[0]]
    assert sorted(claimed) == sorted(ROWS), "a preset claims an unknown row, or a row has no or two presets"
    assert len([r for r in ROWS if r[0] == "Table 1"]) == 6 and len([r for r in ROWS if r[0] == "Table 2"]) == 6
    assert {r[1] for r in ROWS if r[0] == "Table 6"} == {f"MTDN-{s}" for s in ("mds", "inp0", "inp2", "inp3", "full")}


@pytest.mark.parametrize("stem", PRESETS)
def test_preset_builds_the_variant_and_backbone_its_header_claims(stem: str) -> None:
    rows, dataset = read_header(ABLATIONS / f"{stem}.yaml")
    assert rows, f"{stem}.yaml has no '# paper: Table N | row' line"
    for row in rows:
        assert dataset == SETTING[row[0]][0], f"{stem}: {row[0]} was run on {SETTING[row[0]][0]}"
    cfg = load_config([REPO_ROOT / dataset, ABLATIONS / f"{stem}.yaml"], TINY)
    model = build_model(cfg.model).eval()
    backbone = SETTING[rows[0][0]][1]
    for row in rows:
        assert model.describe() == f"{ROWS[row]} {backbone} OS8", (stem, row)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert {f"final_{k}" for k in cfg.model.final_tasks} <= set(out)
    assert model.phase_outputs(1) and set(model.phase_outputs(2)) <= set(out)


@pytest.mark.parametrize("stem", PRESETS)
def test_model_command_describes_every_preset_at_full_size(stem: str, capsys) -> None:
    """``padnet-dist model --config <dataset preset> --config <ablation>`` works for every row (meta device)."""
    _, dataset = read_header(ABLATIONS / f"{stem}.yaml")
    assert (
        main(["model", "--config", str(REPO_ROOT / dataset), "--config", str(ABLATIONS / f"{stem}.yaml"), "--json"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    cfg = load_config([REPO_ROOT / dataset, ABLATIONS / f"{stem}.yaml"])
    h, w = cfg.data.crop_height, cfg.data.crop_width
    for k in cfg.model.final_tasks:
        channels = cfg.model.num_classes if k == "semantic" else 1
        assert report["outputs"][f"final_{k}"] == [1, channels, h, w]
    assert report["params"] > 1e6 and report["gflops"] > 10


def test_unsupervised_mds_trains_only_the_final_outputs_in_phase_2() -> None:
    cfg = load_config([REPO_ROOT / NYUD, ABLATIONS / "t6_mtdn_mds_unsupervised.yaml"], TINY)
    model = build_model(cfg.model)
    assert model.phase_outputs(2) == ("final_depth", "final_semantic")
    assert model.phase_outputs(1) == ("inter_semantic",)
    full = build_model(load_config([REPO_ROOT / NYUD, ABLATIONS / "t6_mtdn_full.yaml"], TINY).model)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in full.parameters())
