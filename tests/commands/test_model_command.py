"""``padnet-dist model`` describes the configured variant."""

from __future__ import annotations

import json

import torch

from padnet_dist.cli import main
from padnet_dist.config import load_config
from padnet_dist.model import build_model
from tests.helpers import REPO_ROOT

TINY = str(REPO_ROOT / "configs" / "tiny.yaml")


def test_json_reports_variant_params_gflops_and_output_shapes(capsys) -> None:
    assert main(["model", "--config", TINY, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"variant", "params", "gflops", "outputs"}
    cfg = load_config(TINY)
    model = build_model(cfg.model)
    assert report["params"] == sum(p.numel() for p in model.parameters())
    assert report["variant"] == model.describe() and "distillation C" in report["variant"]
    h, w, c = cfg.data.crop_height, cfg.data.crop_width, cfg.model.num_classes
    with torch.no_grad():
        real = model.eval()(torch.zeros(1, 3, h, w))
    assert report["outputs"] == {name: list(t.shape) for name, t in real.items()}
    assert report["outputs"]["final_semantic"] == [1, c, h, w]
    assert 0 < report["gflops"] < 100


def test_overrides_change_the_variant_and_text_output(capsys) -> None:
    assert main(["model", "--config", TINY, "model.variant=frontend", "model.final_tasks=[depth]"]) == 0
    text = capsys.readouterr().out
    assert "Front-end baseline (final DE) ResNet-18 OS8" in text
    assert "final_depth" in text and "inter_" not in text and "gflops" in text


def test_alexnet_front_end_is_described_with_its_real_shapes(capsys) -> None:
    overrides = ["model.backbone=alexnet", "data.crop_height=70", "data.crop_width=90"]
    assert main(["model", "--config", TINY, "--json", *overrides]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["variant"].endswith("AlexNet OS8")
    model = build_model(load_config(TINY, overrides).model).eval()
    assert report["params"] == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        real = model(torch.zeros(1, 3, 70, 90))
    assert report["outputs"] == {name: list(t.shape) for name, t in real.items()}
    assert report["outputs"]["final_depth"] == [1, 1, 70, 90] and report["outputs"]["inter_depth"] == [1, 1, 17, 22]


def test_gflops_grow_with_the_input_and_distillation_a_costs_more(capsys) -> None:
    def gflops(*overrides: str) -> float:
        assert main(["model", "--config", TINY, "--json", *overrides]) == 0
        return json.loads(capsys.readouterr().out)["gflops"]

    small, big = gflops(), gflops("data.crop_height=128", "data.crop_width=128")
    assert 3.5 < big / small < 4.5  # a fully convolutional net: cost ~ pixels
    assert gflops("model.distillation=A") > gflops("model.distillation=B")


def test_bad_key_is_a_one_line_error(capsys) -> None:
    assert main(["model", "--config", TINY, "model.distilation=A"]) == 2
    err = capsys.readouterr().err
    assert "distilation" in err and len(err.strip().splitlines()) == 1
