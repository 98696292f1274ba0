"""Distributed evaluation: what is scored, padding, fallbacks, Cityscapes label ids, and world-size independence."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from padnet_dist.data.cityscapes_labels import ID_TO_TRAIN_ID
from padnet_dist.eval.cityscapes import CityscapesEvaluator
from padnet_dist.eval.runner import DEPTH_NOTE, evaluate, gt_label_ids
from padnet_dist.world import World

NUM_CLASSES = 5


class _PixelModel(nn.Module):
    """A small deterministic network with the output contract: per-pixel 1x1 convolutions of the input.

    ``scale`` < 1 returns predictions at a lower resolution (like the intermediate heads); ``names`` picks outputs.
    """

    def __init__(self, names=("final_depth", "final_semantic"), scale: float = 1.0, num_classes: int = NUM_CLASSES):
        super().__init__()
        torch.manual_seed(0)
        self.names, self.scale = names, scale
        self.depth = nn.Conv2d(3, 1, 1)
        self.semantic = nn.Conv2d(3, num_classes, 1)
        self.normals = nn.Conv2d(3, 3, 1)
        self.contour = nn.Conv2d(3, 1, 1)
        self.modes: list[bool] = []

    def forward(self, rgb, outputs=None):
        self.modes.append(self.training)
        if self.scale != 1.0:
            rgb = F.interpolate(rgb, scale_factor=self.scale, mode="bilinear", align_corners=False)
        out = {
            "depth": F.softplus(self.depth(rgb)) + 0.5,
            "semantic": self.semantic(rgb),
            "normals": self.normals(rgb),
            "contour": self.contour(rgb),
        }
        return {name: out[name.split("_", 1)[1]] for name in self.names}


def _batch(seed: int, valid, height: int = 12, width: int = 16, num_classes: int = NUM_CLASSES) -> dict:
    g = torch.Generator().manual_seed(seed)
    b = len(valid)
    depth = torch.rand(b, 1, height, width, generator=g) * 4 + 0.2
    depth[torch.rand(b, 1, height, width, generator=g) < 0.2] = 0.0
    semantic = torch.randint(0, num_classes, (b, height, width), generator=g)
    semantic[:, 0, :3] = 255
    normals = F.normalize(torch.randn(b, 3, height, width, generator=g), dim=1)
    normals[:, :, -1, :] = 0.0
    contour = (torch.rand(b, 1, height, width, generator=g) < 0.3).float()
    contour[:, :, 0, 0] = 255
    return {
        "rgb": torch.randn(b, 3, height, width, generator=g),
        "semantic": semantic,
        "depth": depth,
        "normals": normals,
        "contour": contour,
        "valid": torch.tensor(valid, dtype=torch.bool),
        "instances": torch.full((b, height, width), -1, dtype=torch.int64),
        "keys": [f"k{seed}_{i}" for i in range(b)],
    }


def _reference(model: nn.Module, batches: list[dict]) -> dict:
    """The metrics in plain numpy, pooled over the valid pixels of the valid samples."""
    preds, gts, pred_ids, gt_ids = [], [], [], []
    model.eval()
    with torch.no_grad():
        for batch in batches:
            out = model(batch["rgb"])
            keep = batch["valid"].numpy()
            size = batch["semantic"].shape[-2:]
            d = F.interpolate(out["final_depth"], size=size, mode="bilinear", align_corners=False)
            s = F.interpolate(out["final_semantic"], size=size, mode="bilinear", align_corners=False).argmax(1)
            preds.append(d.numpy()[keep].astype(np.float64).ravel())
            gts.append(batch["depth"].numpy()[keep].astype(np.float64).ravel())
            pred_ids.append(s.numpy()[keep].ravel())
            gt_ids.append(batch["semantic"].numpy()[keep].ravel())
    d, t = np.concatenate(preds), np.concatenate(gts)
    d, t = np.maximum(d[t > 0], 1e-3), t[t > 0]
    ratio = np.maximum(d / t, t / d)
    p, g = np.concatenate(pred_ids), np.concatenate(gt_ids)
    p, g = p[g != 255], g[g != 255]
    ious, accs = [], []
    for c in range(NUM_CLASSES):
        tp, gt_c, pred_c = np.sum((p == c) & (g == c)), np.sum(g == c), np.sum(p == c)
        if gt_c + pred_c:
            ious.append(tp / (gt_c + pred_c - tp))
        if gt_c:
            accs.append(tp / gt_c)
    return {
        "depth": {
            "rel": np.mean(np.abs(d - t) / t),
            "rms": math.sqrt(np.mean((d - t) ** 2)),
            "log10": np.mean(np.abs(np.log10(d) - np.log10(t))),
            "delta1": np.mean(ratio < 1.25),
            "delta2": np.mean(ratio < 1.25**2),
            "delta3": np.mean(ratio < 1.25**3),
        },
        "semantic": {"miou": np.mean(ious), "mean_acc": np.mean(accs), "pixel_acc": np.mean(p == g)},
    }


def test_metrics_pool_valid_pixels_and_skip_padding():
    model = _PixelModel()
    batches = [_batch(1, [True, True]), _batch(2, [True, False])]
    result = evaluate(model, batches, num_classes=NUM_CLASSES, dataset="synthetic", world=World())
    expected = _reference(model, batches)
    assert result["num_samples"] == 3
    for section in ("depth", "semantic"):
        for key, value in expected[section].items():
            assert result[section][key] == pytest.approx(value, rel=1e-12, abs=1e-15), f"{section}.{key}"
    assert result["depth"]["note"] == DEPTH_NOTE
    assert "normals" not in result and "contour" not in result and "cityscapes" not in result
    # garbage in a padding sample changes nothing
    poisoned = [
        batches[0],
        {**batches[1], "depth": batches[1]["depth"].clone(), "semantic": batches[1]["semantic"].clone()},
    ]
    poisoned[1]["depth"][1] = 1000.0
    poisoned[1]["semantic"][1] = 0
    again = evaluate(model, poisoned, num_classes=NUM_CLASSES, dataset="synthetic", world=World())
    assert again["depth"] == result["depth"] and again["semantic"]["miou"] == result["semantic"]["miou"]


def test_model_runs_in_eval_mode_and_training_mode_is_restored():
    model = _PixelModel()
    model.train()
    evaluate(model, [_batch(1, [True])], num_classes=NUM_CLASSES, dataset="synthetic", world=World())
    assert model.modes == [False] and model.training


def test_low_resolution_intermediate_outputs_are_scored_at_full_resolution():
    names = ("inter_depth", "inter_semantic", "inter_normals", "inter_contour")
    model = _PixelModel(names=names, scale=0.25)
    batches = [_batch(3, [True, True], height=16, width=24)]
    result = evaluate(model, batches, num_classes=NUM_CLASSES, dataset="synthetic", world=World())
    assert set(result) >= {"depth", "semantic", "normals", "contour"}
    assert result["depth"]["num_pixels"] == int((batches[0]["depth"] > 0).sum())
    assert result["semantic"]["num_pixels"] == int((batches[0]["semantic"] != 255).sum())
    assert result["normals"]["num_pixels"] == 2 * 15 * 24  # the zero-vector bottom row is invalid
    assert 0.0 <= result["normals"]["mean"] <= 180.0
    assert 0.0 <= result["contour"]["f_score"] <= 1.0


class _Fixed(nn.Module):
    """Returns a fixed ``final_depth`` whatever the input (a model that predicts exactly what it is given)."""

    def __init__(self, depth: torch.Tensor) -> None:
        super().__init__()
        self.fixed = depth

    def forward(self, rgb, outputs=None):
        return {"final_depth": self.fixed}


def test_a_disparity_model_is_scored_in_pixels_or_converted_to_metres():
    baseline, fx = torch.tensor([0.2, 0.25], dtype=torch.float64), torch.tensor([100.0, 120.0], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    depth_m = torch.rand(2, 1, 4, 6, generator=gen) * 50 + 1
    depth_m[:, :, 0, :2] = 0.0  # invalid (p = 0, 1, or masked by the loader's range)
    gt = torch.where(depth_m > 0, (baseline * fx).view(2, 1, 1, 1) / depth_m.clamp_min(1e-6), 0.0).float()
    batch = {
        "rgb": torch.zeros(2, 3, 4, 6),
        "semantic": torch.zeros(2, 4, 6, dtype=torch.long),
        "depth": gt,
        "valid": torch.ones(2, dtype=torch.bool),
        "camera": {"fx": fx, "baseline": baseline},
    }
    model = _Fixed(2.0 * gt)  # twice the disparity = half the depth
    kwargs = dict(num_classes=1, dataset="cityscapes", world=World(), depth_target="disparity")
    pixels = evaluate(model, [batch], **kwargs)["depth"]
    metres = evaluate(model, [batch], depth_in_metres=True, **kwargs)["depth"]
    assert (pixels["target"], pixels["unit"]) == ("disparity", "px") and "converted_from" not in pixels
    assert (metres["unit"], metres["converted_from"]) == ("m", "disparity")
    assert pixels["num_pixels"] == metres["num_pixels"] == 2 * 22
    assert pixels["rel"] == pytest.approx(1.0, rel=1e-6) and metres["rel"] == pytest.approx(0.5, rel=1e-6)
    assert pixels["delta1"] == metres["delta1"] == 0.0  # a ratio of 2 either way
    # the metric range is in metres whatever the unit scored: beyond 20 m nothing counts
    capped = evaluate(model, [batch], depth_cap_m=20.0, **kwargs)["depth"]
    assert capped["num_pixels"] == int(((depth_m > 0) & (depth_m < 20.0)).sum())


def test_depth_cap_and_class_names():
    model = _PixelModel()
    batches = [_batch(4, [True, True])]
    capped = evaluate(
        model,
        batches,
        num_classes=NUM_CLASSES,
        dataset="nyud",
        world=World(),
        depth_cap_m=2.0,
        class_names=[f"c{i}" for i in range(NUM_CLASSES)],
    )
    gt = batches[0]["depth"]
    assert capped["depth"]["num_pixels"] == int(((gt > 0) & (gt < 2.0)).sum())
    assert list(capped["semantic"]["iou"]) == [f"c{i}" for i in range(NUM_CLASSES)]


def test_wrong_number_of_classes_is_a_user_error():
    from padnet_dist.errors import UserError

    batch = _batch(5, [True])
    batch["semantic"][0, 1, 1] = NUM_CLASSES + 3
    with pytest.raises(UserError, match="num_classes"):
        evaluate(_PixelModel(), [batch], num_classes=NUM_CLASSES, dataset="synthetic", world=World())


def _cityscapes_batch(seed: int, with_instances: bool) -> dict:
    rng = np.random.default_rng(seed)
    label_ids = rng.choice([0, 7, 8, 11, 24, 26, 4], size=(2, 8, 12))
    instances = label_ids.astype(np.int64).copy()
    instances[label_ids == 26] = 26000 + rng.integers(0, 3, size=int((label_ids == 26).sum()))
    batch = _batch(seed, [True, True], height=8, width=12, num_classes=19)
    batch["semantic"] = torch.from_numpy(ID_TO_TRAIN_ID[label_ids].astype(np.int64))
    batch["instances"] = torch.from_numpy(instances) if with_instances else torch.full((2, 8, 12), -1)
    return batch, label_ids, instances


def test_cityscapes_section_uses_instance_label_ids():
    model = _PixelModel(num_classes=19)
    batch, label_ids, instances = _cityscapes_batch(6, with_instances=True)
    result = evaluate(model, [batch], num_classes=19, dataset="cityscapes", world=World())
    model.eval()
    with torch.no_grad():
        pred = model(batch["rgb"])["final_semantic"].argmax(1).numpy()
    direct = CityscapesEvaluator()
    from padnet_dist.data.cityscapes_labels import train_ids_to_label_ids

    for i in range(2):
        direct.update(train_ids_to_label_ids(pred[i]), label_ids[i], instances[i])
    expected = direct.compute()
    for key in ("iou_class", "iiou_class", "iou_category", "iiou_category"):
        np.testing.assert_allclose(result["cityscapes"][key], expected[key], rtol=1e-12, equal_nan=True)
    assert result["cityscapes"]["num_images"] == 2
    assert "classes outside the 19 train ids" not in result["cityscapes"].get("note", "")
    assert "2048x1024" in result["cityscapes"]["note"]  # evaluated below the official resolution
    assert result["cityscapes"]["official"] is False


def test_cityscapes_without_instances_says_official_numbers_need_eval_cityscapes():
    batch, _, _ = _cityscapes_batch(7, with_instances=False)
    result = evaluate(_PixelModel(num_classes=19), [batch], num_classes=19, dataset="cityscapes", world=World())
    assert "eval-cityscapes" in result["cityscapes"]["note"] and "train ids" in result["cityscapes"]["note"]
    assert math.isnan(result["cityscapes"]["iiou_class"])


def test_gt_label_ids_from_instance_image():
    train = np.array([[0, 255], [13, 255]])
    inst = np.array([[7, 4], [26001, 65535]])  # 65535: a license plate (id -1) wrapped to 16 bits
    labels, instances = gt_label_ids(train, inst)
    assert labels.tolist() == [[7, 4], [26, 0]] and instances.tolist() == [[7, 4], [26001, 0]]
    labels, instances = gt_label_ids(train, np.full((2, 2), -1))
    assert labels.tolist() == [[7, 0], [26, 0]] and instances is None


# --- world-size independence with real processes ---------------------------------------------------------------


def _rank_main(rank: int, world_size: int, port: int, manifest_url: str, weights_path: str, out_dir: str) -> None:
    import torch.distributed as dist

    from padnet_dist.config import load_config
    from padnet_dist.data.loader import build_eval_loader
    from padnet_dist.model import build_model

    torch.set_num_threads(1)
    world = World(rank=rank, world_size=world_size, master_port=port)
    if world_size > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "tiny.yaml"))
    model = build_model(cfg.model)
    model.load_state_dict(torch.load(weights_path, weights_only=True))
    cfg.data.eval_batch_size = 1
    loader = build_eval_loader(cfg.data, world, manifest_url=manifest_url)
    metrics = evaluate(model, loader, num_classes=cfg.model.num_classes, dataset="synthetic", world=world)
    with open(os.path.join(out_dir, f"world{world_size}-rank{rank}.json"), "w") as f:
        json.dump(metrics, f)
    if world_size > 1:
        dist.destroy_process_group()


def write_synthetic_shards(out_dir: str, num: int, height: int = 32, width: int = 48, split: str = "val") -> str:
    """Real synthetic scenes written with the real shard writer; returns the manifest URL."""
    from padnet_dist.data.converters.synthetic import SyntheticScene, dataset_info, load_scene
    from padnet_dist.data.writer import write_shards

    jobs = [SyntheticScene(7, i, height, width) for i in range(num)]
    write_shards(
        jobs, load_scene, out_url=out_dir, split=split, info=dataset_info(), samples_per_shard=2, progress=False
    )
    return os.path.join(out_dir, f"{split}.manifest.json")


def _numeric_leaves(d: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_numeric_leaves(v, f"{prefix}{k}."))
        elif isinstance(v, list):
            out.update({f"{prefix}{k}[{i}]": x for i, x in enumerate(v)})
        elif isinstance(v, (int, float)):
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.integration
def test_metrics_do_not_depend_on_world_size(tmp_path):
    """Every rank runs one thread on batches of one sample (``_rank_main``), so each sample's prediction is bitwise
    the same on any world size and any machine; the metric sums then differ only by float64 rounding."""
    import torch.multiprocessing as mp

    from padnet_dist.config import load_config
    from padnet_dist.launch.env import free_port
    from padnet_dist.model import build_model

    manifest = write_synthetic_shards(str(tmp_path / "shards"), num=5)  # odd: the 2-rank run pads
    torch.manual_seed(0)
    weights = str(tmp_path / "model.pt")
    torch.save(build_model(load_config("configs/tiny.yaml").model).state_dict(), weights)
    for world_size in (1, 2):
        mp.spawn(_rank_main, args=(world_size, free_port(), manifest, weights, str(tmp_path)), nprocs=world_size)
    results = {
        name: json.loads((tmp_path / f"{name}.json").read_text())
        for name in ("world1-rank0", "world2-rank0", "world2-rank1")
    }
    one = _numeric_leaves(results["world1-rank0"])
    assert results["world1-rank0"]["num_samples"] == 5
    assert one["depth.num_pixels"] > 0 and set(results["world1-rank0"]) >= {"depth", "semantic", "normals", "contour"}
    for name in ("world2-rank0", "world2-rank1"):
        two = _numeric_leaves(results[name])
        assert two.keys() == one.keys()
        for key, value in one.items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(two[key]), key
            else:
                assert two[key] == pytest.approx(value, rel=1e-12, abs=1e-15), f"{name}: {key}"
