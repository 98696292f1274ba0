"""Every variant builds only what it uses, returns the contract's outputs, and trains every parameter it has."""

from __future__ import annotations

import pytest
import torch

from padnet_dist.config.model import ModelConfig
from padnet_dist.model import OUTPUT_NAMES, PADNet, build_model

ALL = ["depth", "normals", "semantic", "contour"]
TINY = dict(backbone="resnet18", width=32, distill_channels=8, aggregation_channels=8, num_classes=5)
H, W = 64, 64

VARIANTS = {
    "frontend_de": dict(variant="frontend", final_tasks=["depth"]),
    "frontend_sp": dict(variant="frontend", final_tasks=["semantic"]),
    "frontend_de_sp": dict(variant="frontend"),
    "a_de": dict(distillation="A", final_tasks=["depth"]),
    "b_de": dict(distillation="B", final_tasks=["depth"]),
    "c_sp": dict(distillation="C", final_tasks=["semantic"]),
    "a_de_sp": dict(distillation="A"),
    "b_de_sp": dict(distillation="B"),
    "c_de_sp": dict(distillation="C"),
    "inp0": dict(distill_inputs=[]),
    "inp2": dict(distill_inputs=["depth", "semantic"]),
    "inp3": dict(distill_inputs=["depth", "semantic", "normals"]),
    "mds": dict(variant="mtdn_mds"),
    "mds_a": dict(variant="mtdn_mds", distillation="A"),
    "unsupervised": dict(supervise_intermediate=False),
    "alexnet_c_de_sp": dict(backbone="alexnet"),
    "alexnet_a_de": dict(backbone="alexnet", distillation="A", final_tasks=["depth"]),
    "alexnet_frontend_de_sp": dict(backbone="alexnet", variant="frontend"),
    "alexnet_inp0": dict(backbone="alexnet", distill_inputs=[]),
    "alexnet_os16_mds": dict(backbone="alexnet", output_stride=16, variant="mtdn_mds"),
}


def _model(**overrides: object) -> PADNet:
    torch.manual_seed(0)
    return build_model(ModelConfig(**{**TINY, **overrides}))


def _expected_shapes(model: PADNet, batch: int, height: int, width: int, num_classes: int) -> dict[str, tuple]:
    channels = {"depth": 1, "normals": 3, "semantic": num_classes, "contour": 1}
    shapes = {f"inter_{t}": (batch, channels[t], height // 4, width // 4) for t in model.intermediate_tasks}
    shapes.update({f"final_{k}": (batch, channels[k], height, width) for k in model.final_tasks})
    return shapes


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_outputs_gradients_and_no_unused_modules(name: str) -> None:
    model = _model(**VARIANTS[name]).train()
    out = model(torch.randn(2, 3, H, W))
    assert {n: tuple(t.shape) for n, t in out.items()} == _expected_shapes(model, 2, H, W, 5)
    assert set(out) <= set(OUTPUT_NAMES)

    # only what phase 2 trains carries a loss (without intermediate supervision: the final outputs)
    sum(out[n].float().mean() for n in model.phase_outputs(2)).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"parameters without gradient (created but unused?): {no_grad[:5]}"


def test_only_used_modules_exist() -> None:
    depth_only = _model(final_tasks=["depth"])
    assert list(depth_only.decoders) == ["depth"]
    assert not any(
        "semantic_to" in n or "to_semantic" in n or "gates.semantic" in n for n, _ in depth_only.named_parameters()
    )

    baseline = _model(variant="frontend", final_tasks=["depth"])
    assert baseline.intermediate is None and baseline.distillation is None
    assert list(baseline.decoders) == list(baseline.bridges) == ["depth"]

    inp2 = _model(distill_inputs=["depth", "semantic"])
    assert list(inp2.intermediate.heads) == ALL  # full intermediate supervision
    assert list(inp2.distill_encoders.encoders) == ["depth", "semantic"]
    assert inp2.bridges is None

    inp0 = _model(distill_inputs=[])
    assert inp0.distillation is None and inp0.distill_encoders is None and list(inp0.bridges) == ["depth", "semantic"]

    no_aux = _model(intermediate_tasks=["depth", "semantic"], distill_inputs=["depth", "semantic"])
    assert list(no_aux.intermediate.heads) == ["depth", "semantic"]
    assert no_aux.output_names == ("inter_depth", "inter_semantic", "final_depth", "final_semantic")


def test_mds_feeds_task_features_not_predictions() -> None:
    mds, full = _model(variant="mtdn_mds"), _model()
    width = TINY["width"]
    mds_in = {t: enc[0].in_channels for t, enc in mds.distill_encoders.encoders.items()}
    full_in = {t: enc[0].in_channels for t, enc in full.distill_encoders.encoders.items()}
    assert mds_in == {"depth": width, "normals": width // 2, "semantic": width, "contour": width // 2}
    assert full_in == {"depth": 1, "normals": 3, "semantic": 5, "contour": 1}


def test_outputs_restrict_what_is_computed() -> None:
    model = _model().eval()
    calls: list[str] = []
    for name in ("distillation", "decoders"):
        getattr(model, name).register_forward_hook(lambda *_, n=name: calls.append(n))
    out = model(torch.randn(1, 3, H, W), outputs=model.phase_outputs(1))
    assert list(out) == ["inter_semantic"] and calls == []
    out = model(torch.randn(1, 3, H, W), outputs=["final_depth"])
    assert list(out) == ["final_depth"] and calls == ["distillation"]
    with pytest.raises(ValueError, match="not produced"):
        model(torch.randn(1, 3, H, W), outputs=["final_normals"])


def test_restricted_outputs_equal_full_forward() -> None:
    model = _model().eval()
    rgb = torch.randn(1, 3, H, W)
    with torch.no_grad():
        full, part = model(rgb), model(rgb, outputs=["final_semantic", "inter_depth"])
    for name, tensor in part.items():
        torch.testing.assert_close(tensor, full[name])


def test_phase_outputs_and_parameters() -> None:
    model = _model()
    assert model.phase_outputs(1) == ("inter_semantic",)
    assert model.phase_outputs(2) == OUTPUT_NAMES
    phase1 = {id(p) for p in model.phase_parameters(1)}
    expected = {id(p) for m in (model.frontend, model.intermediate.heads["semantic"]) for p in m.parameters()}
    assert phase1 == expected
    assert len(model.phase_parameters(2)) == len(list(model.parameters()))
    # phase 1's parameters are exactly those the phase-1 output depends on
    model(torch.randn(2, 3, H, W), outputs=model.phase_outputs(1))["inter_semantic"].mean().backward()
    assert {id(p) for p in model.parameters() if p.grad is not None} == phase1

    baseline = _model(variant="frontend")
    assert baseline.phase_outputs(1) == ("final_semantic",)
    names = {
        n.split(".")[0] + "." + n.split(".")[1]
        for n, p in baseline.named_parameters()
        if id(p) in {id(q) for q in baseline.phase_parameters(1)}
    }
    assert names == {"frontend.backbone", "frontend.reducers", "bridges.semantic", "decoders.semantic"}
    with pytest.raises(ValueError, match="phase=3"):
        model.phase_outputs(3)


def test_phase_1_uses_depth_when_a_model_has_no_scene_parsing() -> None:
    """Front-end + DE (Table 1) has no semantic output: phase 1 trains the front end with its depth path, so the
    baseline never sees semantic labels and its phase 2 has a phase-1 checkpoint to start from."""
    baseline = _model(variant="frontend", final_tasks=["depth"])
    assert baseline.phase_outputs(1) == ("final_depth",)
    phase1 = {id(p) for p in baseline.phase_parameters(1)}
    assert phase1 == {id(p) for p in baseline.parameters()}  # front end + its one bridge and decoder
    no_semantic = _model(intermediate_tasks=["depth", "normals"], distill_inputs=["depth"], final_tasks=["depth"])
    assert no_semantic.phase_outputs(1) == ("inter_depth",)
    expected = {id(p) for m in (no_semantic.frontend, no_semantic.intermediate.heads["depth"]) for p in m.parameters()}
    assert {id(p) for p in no_semantic.phase_parameters(1)} == expected
    with pytest.raises(ValueError, match="neither inter_semantic nor inter_depth"):
        _model(intermediate_tasks=["normals"], distill_inputs=[], final_tasks=["depth"]).phase_outputs(1)


def test_without_intermediate_supervision_phase_2_trains_the_final_outputs_only() -> None:
    """The same network as the full model (same parameters), but phase 2's losses and scores are the final outputs;
    the intermediate heads still learn, through the distillation."""
    unsupervised, full = _model(supervise_intermediate=False), _model()
    assert [n for n, _ in unsupervised.named_parameters()] == [n for n, _ in full.named_parameters()]
    assert unsupervised.phase_outputs(2) == ("final_depth", "final_semantic")
    assert unsupervised.phase_outputs(1) == full.phase_outputs(1) == ("inter_semantic",)
    assert "intermediate depth,normals,semantic,contour unsupervised" in unsupervised.describe()
    with pytest.raises(ValueError, match="neither supervised nor distilled"):
        build_model(ModelConfig(**TINY, supervise_intermediate=False, distill_inputs=["depth", "semantic"]))
    with pytest.raises(ValueError, match="needs every intermediate task distilled"):
        PADNet(**TINY, supervise_intermediate=False, distill_inputs=[])


def test_odd_input_size_gives_exact_output_sizes() -> None:
    model = _model().eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 70, 90))
    assert {n: tuple(t.shape) for n, t in out.items()} == _expected_shapes(model, 1, 70, 90, 5)


def test_resnet101_default_model_on_a_small_input() -> None:
    model = build_model(ModelConfig(num_classes=19)).eval()  # ResNet-101, N=512, distillation C, OS8
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert {n: tuple(t.shape) for n, t in out.items()} == _expected_shapes(model, 1, 32, 32, 19)
    assert "ResNet-101 OS8" in model.describe() and "distillation C" in model.describe()
