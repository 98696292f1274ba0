"""One owner of the model's names: the config accepts exactly what the model can build."""

from __future__ import annotations

import subprocess
import sys

import pytest

from padnet_dist import vocabulary
from padnet_dist.config import ModelConfig
from padnet_dist.model import BACKBONES, DISTILLATIONS, OUTPUT_NAMES, PADNet, build_model


def test_model_registries_hold_exactly_the_vocabulary() -> None:
    assert tuple(DISTILLATIONS) == vocabulary.DISTILLATIONS
    assert sorted(BACKBONES) == sorted(vocabulary.BACKBONES)
    assert OUTPUT_NAMES == tuple(f"inter_{t}" for t in vocabulary.TASKS) + tuple(
        f"final_{t}" for t in vocabulary.FINAL_TASKS
    )


@pytest.mark.parametrize(("key", "value"), [("backbone", "vgg16"), ("variant", "mtan"), ("distillation", "D")])
def test_config_rejects_a_name_outside_the_vocabulary_and_lists_the_valid_ones(key: str, value: str) -> None:
    allowed = {
        "backbone": vocabulary.BACKBONES,
        "variant": vocabulary.VARIANTS,
        "distillation": vocabulary.DISTILLATIONS,
    }
    with pytest.raises(ValueError, match=f"model.{key}='{value}' is not one of {', '.join(allowed[key])}"):
        ModelConfig(**{key: value})


def test_every_distillation_and_variant_the_config_accepts_builds() -> None:
    for distillation in vocabulary.DISTILLATIONS:
        for variant in vocabulary.VARIANTS:
            cfg = ModelConfig(backbone="alexnet", variant=variant, distillation=distillation, width=8,
                              distill_channels=4, aggregation_channels=4, num_classes=3)  # fmt: skip
            assert isinstance(build_model(cfg), PADNet)


def test_vocabulary_and_config_import_without_torch() -> None:
    code = "import sys, padnet_dist.vocabulary, padnet_dist.config.model; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
