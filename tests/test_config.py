"""The config tree: presets load, mistakes fail at load naming the key and the fix."""

import pytest

from padnet_dist.config import Config, ConfigError, from_yaml_text, load_config, to_yaml
from tests.helpers import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"


@pytest.mark.parametrize("name", ["cityscapes", "nyud", "tiny", "demo"])
def test_presets_load(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert isinstance(cfg, Config)


def test_paper_presets_hold_the_paper_settings():
    city = load_config(CONFIGS / "cityscapes.yaml")
    assert (city.model.backbone, city.model.num_classes, city.model.width) == ("resnet101", 19, 512)
    assert (city.data.crop_height, city.data.crop_width) == (640, 640)
    assert city.data.scales == [0.5, 0.75, 1.0, 1.25, 1.75]
    assert city.phases.phase1.lr == 1e-3 and city.phases.phase2.lr == 1e-5
    # "Total 60 epochs are used for NYUD-v2, and 40 epochs for Cityscapes" (§4.1): both phases together
    assert city.phases.phase1.epochs + city.phases.phase2.epochs == 40
    assert city.data.depth_target == "disparity"  # what Cityscapes provides and the paper trained on
    assert not city.loss.contour_pos_balance  # §3.6: plain cross-entropy
    nyud = load_config(CONFIGS / "nyud.yaml")
    assert (nyud.model.backbone, nyud.model.num_classes) == ("resnet50", 40)  # PAD-Net-ResNet50, Tables 3 and 4
    assert (nyud.data.crop_width, nyud.data.crop_height) == (560, 425) and nyud.data.scales == [1.0, 1.2, 1.5]
    assert nyud.phases.phase1.epochs + nyud.phases.phase2.epochs == 60
    assert city.model.pretrained == nyud.model.pretrained == "IMAGENET1K_V1"  # ImageNet-initialised front end
    assert nyud.optim.momentum == 0.99 and nyud.optim.weight_decay == 5e-4
    assert (nyud.loss.inter_normals, nyud.loss.inter_contour, nyud.loss.final_depth) == (0.8, 0.8, 1.0)


def test_overrides_apply_in_order():
    cfg = load_config([CONFIGS / "nyud.yaml", CONFIGS / "tiny.yaml"], ["model.distillation=B", "phase=2"])
    assert cfg.model.backbone == "resnet18" and cfg.model.distillation == "B" and cfg.phase == 2
    assert cfg.model.pretrained == ""  # tiny over a dataset preset never downloads weights


def test_misspelt_key_names_its_full_path():
    with pytest.raises(ConfigError, match=r"model\.distilation.*Did you mean"):
        load_config(CONFIGS / "tiny.yaml", ["model.distilation=B"])


def test_misspelt_key_in_a_yaml_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  crop_hieght: 3\n")
    with pytest.raises(ConfigError, match=r"data\.crop_hieght.*bad\.yaml"):
        load_config(bad)


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"data\.batch_size"):
        load_config(None, ["data.batch_size=many"])


def test_missing_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_override_without_equals_sign_is_explained():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["model.distillation"])


@pytest.mark.parametrize(
    "overrides, fix",
    [
        (
            ["model.distill_inputs=[depth]", "model.intermediate_tasks=[semantic]"],
            "add 'depth' to model.intermediate_tasks",
        ),
        (["model.final_tasks=[depth]", "model.distill_inputs=[semantic]"], "lacks \\['depth'\\]"),
        (["model.final_tasks=[]"], "at least one"),
        (["model.distillation=D"], "A, B, C"),
        (["phase=3"], "phase=1"),
        (["data.depth_target=metres"], "depth, disparity, inverse_depth"),
        (["data.min_depth_m=-1"], "must be >= 0"),
        (["data.min_depth_m=5", "data.max_depth_m=2"], "raise max_depth_m or set it to 0"),
        (
            ["model.intermediate_tasks=[normals]", "model.distill_inputs=[]", "model.final_tasks=[depth]"],
            "neither 'semantic' nor 'depth'",
        ),
        (["model.backbone=alexnet", "model.output_stride=32"], "AlexNet supports 8 or 16"),
        (["model.backbone=vgg16"], "alexnet, resnet18"),
        (["model.supervise_intermediate=false", "model.distill_inputs=[depth,semantic]"], "add them to model.distill"),
        (["model.supervise_intermediate=false", "model.variant=frontend"], "use variant padnet or mtdn_mds"),
        (["run.dir=runs/x", "pipeline.phase1_from=runs/x/"], "is this run's own run.dir: leave it empty"),
        (["run.dir=runs/x", "pipeline.phase1_from=s3://b/runs/y"], "different storage: .*both s3:// or both local"),
    ],
)
def test_cross_field_mistakes_say_how_to_fix(overrides, fix):
    with pytest.raises(ConfigError, match=fix):
        load_config(None, overrides)


def test_yaml_roundtrip_is_lossless():
    cfg = load_config(CONFIGS / "tiny.yaml", ["model.distillation=A", "data.scales=[1.0,2.0]"])
    assert from_yaml_text(to_yaml(cfg)) == cfg
