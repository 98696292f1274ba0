"""``check_data``: the pipeline's first job stops a run whose shards are missing or do not fit its model, before any
training job is queued."""

from __future__ import annotations

import pytest

from padnet_dist.config import load_config
from padnet_dist.data.check import check_data
from padnet_dist.errors import UserError
from tests.helpers import REPO_ROOT
from tests.helpers.tiny_run import write_tiny_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("shards"))
    write_tiny_shards(out, num=4)
    write_tiny_shards(out, num=4, split="val")
    return out


def _cfg(shards: str, *extra: str):
    overrides = [f"data.train_manifest={shards}/train.manifest.json", f"data.val_manifest={shards}/val.manifest.json"]
    return load_config(REPO_ROOT / "configs" / "tiny.yaml", [*overrides, *extra])


def test_matching_shards_pass_with_one_line_per_split(shards):
    lines = check_data(_cfg(shards))
    assert lines == [
        "data.train_manifest: synthetic/train, 4 samples in 1 shards, 8 classes",
        "data.val_manifest: synthetic/val, 4 samples in 1 shards, 8 classes",
    ]


def test_classes_other_than_the_models_are_refused_with_the_fix(shards):
    with pytest.raises(UserError, match=r"has 8 classes but model.num_classes=5: set model.num_classes=8"):
        check_data(_cfg(shards, "model.num_classes=5"))


def test_a_missing_manifest_is_named(shards):
    with pytest.raises(UserError, match=r"data.val_manifest=/nowhere/val.manifest.json does not exist"):
        check_data(_cfg(shards, "data.val_manifest=/nowhere/val.manifest.json"))
