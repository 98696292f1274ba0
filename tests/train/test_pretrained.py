"""ImageNet backbone weights (ResNet, AlexNet) reach the front end from a path, an s3:// URL or a torchvision name."""

from __future__ import annotations

import os
import urllib.request

import pytest
import torch
import torchvision

from padnet_dist.config.model import ModelConfig
from padnet_dist.errors import UserError
from padnet_dist.model import build_model
from padnet_dist.train.pretrained import build_model_from_config, load_backbone_weights

TINY = dict(backbone="resnet18", width=16, distill_channels=8, aggregation_channels=8, num_classes=4)


def _assert_backbone_equals(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    backbone = model.frontend.backbone.state_dict()
    compared = [k for k in state_dict if not k.startswith(("fc.", "classifier."))]
    assert compared and set(compared) == set(backbone)
    for key in compared:
        assert torch.equal(backbone[key], state_dict[key]), key


@pytest.fixture(scope="module")
def resnet18_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.fixture(scope="module")
def alexnet_state_dict() -> dict[str, torch.Tensor]:
    """The layout of torchvision's ``alexnet-owt-7be5be79.pth``: ``features.{0,3,6,8,10}.*`` and ``classifier.*``."""
    torch.manual_seed(2)
    return torchvision.models.alexnet(weights=None).state_dict()


def test_alexnet_file_loads_strictly_and_ignores_the_classifier(tmp_path, alexnet_state_dict) -> None:
    path = tmp_path / "alexnet-imagenet.pth"
    torch.save(alexnet_state_dict, path)
    model = build_model_from_config(ModelConfig(**{**TINY, "backbone": "alexnet"}, pretrained=str(path)))
    _assert_backbone_equals(model, alexnet_state_dict)
    assert any(k.startswith("classifier.") for k in alexnet_state_dict)

    without_conv5 = {k: v for k, v in alexnet_state_dict.items() if not k.startswith("features.10.")}
    with pytest.raises(UserError, match=r"alexnet: missing 2 \[features.10.weight, features.10.bias\]"):
        build_model(ModelConfig(**{**TINY, "backbone": "alexnet"}), without_conv5)


def test_a_resnet_file_does_not_load_into_alexnet(resnet18_state_dict) -> None:
    with pytest.raises(UserError, match="do not fit alexnet: missing .*features.0.weight.*unexpected .*conv1.weight"):
        build_model(ModelConfig(**{**TINY, "backbone": "alexnet"}), resnet18_state_dict)


def test_path_spec_loads_into_the_backbone(tmp_path, resnet18_state_dict) -> None:
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(resnet18_state_dict, path)
    loaded = load_backbone_weights(str(path))
    model = build_model(ModelConfig(**TINY), loaded)
    _assert_backbone_equals(model, resnet18_state_dict)


def test_build_model_from_config_uses_pretrained(tmp_path, resnet18_state_dict) -> None:
    path = tmp_path / "w.pth"
    torch.save(resnet18_state_dict, path)
    model = build_model_from_config(ModelConfig(**TINY, pretrained=str(path)))
    _assert_backbone_equals(model, resnet18_state_dict)
    random_init = build_model_from_config(ModelConfig(**TINY))
    assert not torch.equal(random_init.frontend.backbone.conv1.weight, resnet18_state_dict["conv1.weight"])


def test_old_files_without_num_batches_tracked_load(resnet18_state_dict) -> None:
    old = {k: v for k, v in resnet18_state_dict.items() if not k.endswith("num_batches_tracked")}
    model = build_model(ModelConfig(**TINY), old)
    assert torch.equal(model.frontend.backbone.layer4[1].bn2.weight, old["layer4.1.bn2.weight"])


def test_mismatched_state_dict_gives_one_clear_line(resnet18_state_dict) -> None:
    model = build_model(ModelConfig(**{**TINY, "backbone": "resnet34"}))
    with pytest.raises(UserError) as info:
        model.frontend.load_backbone_state_dict(resnet18_state_dict)
    message = str(info.value)
    assert "\n" not in message and "resnet34" in message and "missing" in message and "layer" in message

    broken = dict(resnet18_state_dict)
    broken["conv1.weight"] = torch.zeros(32, 3, 7, 7)
    broken["extra.weight"] = torch.zeros(1)
    with pytest.raises(
        UserError, match=r"unexpected 1 \[extra.weight\].*shape mismatch 1 \[conv1.weight \(32, 3, 7, 7\)"
    ):
        build_model(ModelConfig(**TINY), broken)


def test_missing_and_corrupt_files_are_user_errors(tmp_path) -> None:
    with pytest.raises(UserError, match="nope.pth"):
        load_backbone_weights(str(tmp_path / "nope.pth"))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="corrupt.pth"):
        load_backbone_weights(str(corrupt))


def test_unknown_torchvision_name_is_a_user_error() -> None:
    with pytest.raises(UserError, match="not a torchvision weight name"):
        load_backbone_weights("IMAGENET9K_V9", backbone="resnet18")
    with pytest.raises(UserError, match="needs a backbone"):
        load_backbone_weights("IMAGENET1K_V1")


def test_offline_download_fails_with_one_line(tmp_path, monkeypatch) -> None:
    """No internet is simulated by a proxy nobody listens on; the cache is empty."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    # urlopen caches its proxy settings in a global opener: start fresh and restore it afterwards
    monkeypatch.setattr(urllib.request, "_opener", None)
    for backbone in ("resnet18", "alexnet"):  # the name resolves for both; only the download fails
        with pytest.raises(UserError, match="cannot download torchvision weights IMAGENET1K_V1") as info:
            load_backbone_weights("IMAGENET1K_V1", backbone=backbone)
        assert "\n" not in str(info.value)


@pytest.mark.integration
@pytest.mark.parametrize("backbone", ["resnet18", "alexnet"])
def test_s3_spec_loads_into_the_backbone(request, backbone, tmp_path) -> None:
    try:
        s3 = request.getfixturevalue("s3")
    except pytest.FixtureLookupError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("the s3 fixture (tests/conftest.py, moto server) is not available")
    from padnet_dist.storage import storage_for

    state_dict = request.getfixturevalue(f"{backbone}_state_dict")
    path = tmp_path / "w.pth"
    torch.save(state_dict, path)
    url = s3.url("weights") + f"/{backbone}.pth"
    storage_for(url, s3.storage_cfg).write_bytes(url, path.read_bytes())
    model = build_model_from_config(ModelConfig(**{**TINY, "backbone": backbone}, pretrained=url), s3.storage_cfg)
    _assert_backbone_equals(model, state_dict)
