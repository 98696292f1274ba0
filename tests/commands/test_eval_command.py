"""``padnet-dist eval`` end to end: tiny shards, a checkpoint of a tiny model, metrics.json beside it."""

from __future__ import annotations

import json
import os

import pytest

from padnet_dist.cli import main
from padnet_dist.config import load_config
from tests.helpers import REPO_ROOT
from tests.helpers.checkpoint import write_checkpoint

TINY = os.path.join(REPO_ROOT, "configs", "tiny.yaml")


def write_synthetic_shards(out_dir: str, num: int, height: int = 32, width: int = 48, split: str = "val") -> str:
    """Real synthetic scenes written with the real shard writer; returns the manifest URL."""
    from padnet_dist.data.converters.synthetic import SyntheticScene, dataset_info, load_scene
    from padnet_dist.data.writer import write_shards

    jobs = [SyntheticScene(7, i, height, width) for i in range(num)]
    write_shards(
        jobs, load_scene, out_url=out_dir, split=split, info=dataset_info(), samples_per_shard=2, progress=False
    )
    return os.path.join(out_dir, f"{split}.manifest.json")


def _setup(tmp_path, num: int = 3):
    manifest = write_synthetic_shards(str(tmp_path / "shards"), num=num)
    cfg = load_config(TINY, [f"data.val_manifest={manifest}", f"run.dir={tmp_path / 'run'}"])
    ckpt = write_checkpoint(str(tmp_path / "run"), cfg)
    return manifest, ckpt


def test_eval_writes_metrics_json_beside_the_checkpoint(tmp_path, capsys):
    manifest, ckpt = _setup(tmp_path)
    # a run dir resolves to its newest committed checkpoint
    code = main(["eval", "--config", TINY, f"data.val_manifest={manifest}", "--checkpoint", str(tmp_path / "run")])
    assert code == 0
    metrics = json.loads(open(os.path.join(ckpt, "metrics.json")).read())
    assert metrics["num_samples"] == 3 and metrics["dataset"] == "synthetic"
    assert set(metrics["depth"]) >= {"rel", "rms", "log10", "delta1", "delta2", "delta3"}
    assert set(metrics["semantic"]) >= {"miou", "mean_acc", "pixel_acc"}
    assert 0.0 <= metrics["semantic"]["pixel_acc"] <= 1.0 and metrics["depth"]["rms"] > 0
    assert metrics["depth"]["note"] == "pooled over all valid pixels of the split"
    assert metrics["checkpoint"].rstrip("/").endswith("step-000000003")
    assert set(metrics["semantic"]["iou"]) == {"ground", "wall", "ceiling", "sky", "box", "sphere", "cylinder", "pole"}
    out = capsys.readouterr().out
    assert "mean IoU" in out and "rel" in out and "metrics.json" in out
    assert not [n for n in os.listdir(ckpt) if ".tmp" in n]


def test_a_phase_one_checkpoint_is_scored_on_its_scene_parsing_output_only(tmp_path):
    manifest = write_synthetic_shards(str(tmp_path / "shards"), num=2)
    cfg = load_config(TINY, [f"data.val_manifest={manifest}"])
    ckpt = write_checkpoint(str(tmp_path / "run"), cfg, phase=1)
    assert main(["eval", "--checkpoint", ckpt]) == 0
    metrics = json.loads(open(os.path.join(ckpt, "metrics.json")).read())
    # phase 1 trains the front end with the intermediate semantic head only: the decoders are untrained
    assert "semantic" in metrics and "depth" not in metrics and "normals" not in metrics


def test_eval_without_config_uses_the_checkpoint_settings(tmp_path):
    manifest, ckpt = _setup(tmp_path, num=1)
    assert main(["eval", "--checkpoint", ckpt]) == 0
    assert json.loads(open(os.path.join(ckpt, "metrics.json")).read())["split_manifest"] == manifest
    # an override changes that one setting; the split still comes from the checkpoint's config
    assert main(["eval", "--checkpoint", ckpt, "engine.device=cpu", "data.num_workers=1"]) == 0
    metrics = json.loads(open(os.path.join(ckpt, "metrics.json")).read())
    assert metrics["split_manifest"] == manifest and metrics["num_samples"] == 1


def test_eval_errors_are_one_line(tmp_path, capsys):
    manifest, ckpt = _setup(tmp_path, num=1)
    assert main(["eval", "--config", TINY, "--checkpoint", str(tmp_path / "nowhere")]) == 2
    assert "holds no committed checkpoint" in capsys.readouterr().err
    # the network comes from the checkpoint, whatever model.* the config says
    assert (
        main(["eval", "--config", TINY, "model.num_classes=3", f"data.val_manifest={manifest}", "--checkpoint", ckpt])
        == 0
    )
    assert main(["eval", "--config", TINY, "--checkpoint", ckpt, "--split-manifest", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "no shard manifest" in err and len(err.strip().splitlines()) == 1


@pytest.mark.integration
def test_eval_on_two_local_ranks_matches_one(tmp_path, monkeypatch):
    """1 rank and 2 ranks score the same per-sample predictions, so the metrics agree to float64 rounding.

    The predictions are made identical, not compared loosely: CPU conv kernels round fp32 differently with the
    thread count and the batch's size (measured: up to ~6e-6 absolute in the tiny model's depth), and the launcher
    gives each of N ranks cpu_count // N threads. Here every rank runs one thread (OMP_NUM_THREADS, which the
    launcher keeps when set) on batches of one sample, so each sample's prediction is bitwise the same in both runs
    and only the order of adding per-sample float64 sums differs (about 1e-16 relative; 1e-12 asserted).
    """
    manifest, ckpt = _setup(tmp_path, num=3)  # odd: rank 1 gets a padding sample
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = ["eval", "--config", TINY, f"data.val_manifest={manifest}", "data.eval_batch_size=1", "--checkpoint", ckpt]
    assert main([*args, "--nproc", "1"]) == 0
    one = json.loads(open(os.path.join(ckpt, "metrics.json")).read())
    assert main([*args, "--nproc", "2"]) == 0
    two = json.loads(open(os.path.join(ckpt, "metrics.json")).read())
    assert one["num_ranks"] == 1 and two["num_ranks"] == 2 and two["num_samples"] == 3
    for section in ("depth", "semantic", "normals", "contour"):
        for key, value in one[section].items():
            if isinstance(value, float):
                assert two[section][key] == pytest.approx(value, rel=1e-12, abs=1e-15), f"{section}.{key}"


@pytest.mark.integration
def test_eval_and_predict_with_everything_on_s3(tmp_path, s3):
    from padnet_dist.storage import storage_for

    manifest, ckpt = _setup(tmp_path, num=2)
    storage = storage_for(s3.url(), s3.storage_cfg)
    for local_root, prefix in ((tmp_path / "shards", "data"), (tmp_path / "run", "run")):
        for path in sorted(p for p in local_root.rglob("*") if p.is_file()):
            storage.put_file(str(path), s3.url(f"{prefix}/{path.relative_to(local_root).as_posix()}"))
    endpoint = f"storage.endpoint_url={s3.endpoint_url}"
    val = s3.url("data/val.manifest.json")
    assert main(["eval", "--config", TINY, endpoint, f"data.val_manifest={val}", "--checkpoint", s3.url("run")]) == 0
    metrics_url = s3.url("run/phase2/checkpoints/step-000000003/metrics.json")
    metrics = json.loads(storage.read_bytes(metrics_url))
    assert metrics["num_samples"] == 2 and metrics["split_manifest"] == val
    out = s3.url("pred")
    assert (
        main(["predict", "--config", TINY, endpoint, "--checkpoint", s3.url("run"), "--input", val, "--out", out]) == 0
    )
    assert len([u for u in storage.list(out) if u.endswith("_depth16.png")]) == 2


def test_cityscapes_eval_in_shards_equals_official_evaluation_of_predictions(tmp_path):
    """eval's cityscapes numbers (label ids from the shards' instance images) equal the official evaluation of
    the submission PNGs predict writes, scored against the raw gtFine files."""
    import numpy as np
    from PIL import Image

    from padnet_dist.eval.cityscapes import evaluate_folder
    from tests.helpers.raw_datasets import make_cityscapes_root

    root = tmp_path / "cityscapes"
    make_cityscapes_root(root, split="val", cities=("aachen", "bochum"), frames_per_city=1, size=(32, 64))
    # json2labelImg never draws negative ids (license plate), so real labelIds hold none: drop the fixture's 255
    for path in root.glob("gtFine/val/*/*_gtFine_labelIds.png"):
        labels = np.array(Image.open(path))
        Image.fromarray(np.where(labels == 255, 0, labels).astype(np.uint8)).save(path)
    shards = tmp_path / "shards"
    assert main(["shard", "cityscapes", "--root", str(root), "--split", "val", "--out", str(shards)]) == 0
    manifest = str(shards / "val.manifest.json")
    cfg = load_config(TINY, ["model.num_classes=19", f"data.val_manifest={manifest}"])
    ckpt = write_checkpoint(str(tmp_path / "run"), cfg)
    assert main(["eval", "--config", TINY, f"data.val_manifest={manifest}", "--checkpoint", ckpt]) == 0
    ours = json.loads(open(os.path.join(ckpt, "metrics.json")).read())["cityscapes"]
    assert "train ids" not in ours.get("note", "")  # label ids came from the instance images
    pred = tmp_path / "pred"
    assert (
        main(["predict", "--checkpoint", ckpt, "--input", manifest, "--out", str(pred), "--format", "cityscapes"]) == 0
    )
    official = evaluate_folder(pred, root, "val")
    assert ours["num_images"] == official["num_images"] == 2
    assert ours["iiou_class"] == ours["iiou_class"]  # defined (not NaN): the instances reached the evaluator
    for key in ("iou_class", "iiou_class", "iou_category", "iiou_category"):
        assert ours[key] == pytest.approx(official[key], rel=1e-9, nan_ok=True), key


def test_a_disparity_checkpoint_states_its_unit_and_converts_to_metres_on_request(tmp_path, capsys):
    """Cityscapes preset style: the depth head learns disparity; eval and predict say so, and --depth-metres
    converts with each frame's own baseline and fx."""
    import numpy as np

    from padnet_dist.eval.predict import decode_depth_png16, decode_target_png16
    from tests.helpers.raw_datasets import make_cityscapes_root

    root = tmp_path / "cityscapes"
    truth = make_cityscapes_root(root, split="val", cities=("lindau",), frames_per_city=1, size=(32, 64))
    shards = tmp_path / "shards"
    assert main(["shard", "cityscapes", "--root", str(root), "--split", "val", "--out", str(shards)]) == 0
    manifest = str(shards / "val.manifest.json")
    # depth_init: the untrained model's disparity starts near 8 px (its init's spread is ~1 px), so the metres
    # conversion below is checked on positive disparities whatever the random draw
    overrides = [
        "model.num_classes=19",
        f"data.val_manifest={manifest}",
        "data.depth_target=disparity",
        "model.depth_init=8",
    ]
    cfg = load_config(TINY, overrides)
    ckpt = write_checkpoint(str(tmp_path / "run"), cfg)
    assert main(["eval", "--checkpoint", ckpt]) == 0
    depth = json.loads(open(os.path.join(ckpt, "metrics.json")).read())["depth"]
    assert (depth["target"], depth["unit"]) == ("disparity", "px")
    assert "rms (px)" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", ckpt, "--depth-metres"]) == 0
    depth_m = json.loads(open(os.path.join(ckpt, "metrics.json")).read())["depth"]
    assert (depth_m["unit"], depth_m["converted_from"]) == ("m", "disparity")
    assert depth_m["num_pixels"] == depth["num_pixels"] > 0
    assert main(["eval", "--checkpoint", ckpt, "data.depth_target=depth"]) == 2
    assert "predicts disparity" in capsys.readouterr().err

    key = next(iter(truth))
    assert main(["predict", "--checkpoint", ckpt, "--input", manifest, "--out", str(tmp_path / "px")]) == 0
    info = json.loads((tmp_path / "px" / "predictions.json").read_text())
    assert (info["depth_target"], info["depth_unit"], info["png16"]["offset"]) == ("disparity", "px", 1)
    disparity = decode_target_png16((tmp_path / "px" / f"{key}_disparity16.png").read_bytes(), "disparity")
    out = tmp_path / "m"
    assert main(["predict", "--checkpoint", ckpt, "--input", manifest, "--out", str(out), "--depth-metres"]) == 0
    info = json.loads((out / "predictions.json").read_text())
    assert (info["depth_target"], info["depth_unit"], info["converted_from"]) == ("depth", "m", "disparity")
    metres = decode_depth_png16((out / f"{key}_depth16.png").read_bytes()).astype(np.float64)
    # both PNGs quantise to 1/256 (+-1/512): depth = bf / d moves by bf / d^2 / 512 for a disparity error of 1/512
    bf = truth[key].camera["baseline"] * truth[key].camera["fx"]
    ok = (disparity > 0.5) & (metres > 0) & (metres < 255)
    assert ok.any()
    expected = bf / disparity[ok]
    tolerance = bf / disparity[ok] ** 2 / 512 * 1.01 + 1 / 512
    assert (np.abs(metres[ok] - expected) <= tolerance).all()
    assert main(["predict", "--checkpoint", ckpt, "--input", str(root), "--out", str(out), "--depth-metres"]) == 2
    assert "shard manifest" in capsys.readouterr().err
