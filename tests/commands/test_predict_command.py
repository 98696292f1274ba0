"""``padnet-dist predict``: panels from a folder or a manifest, the Cityscapes submission format, one-line errors."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from padnet_dist.cli import main
from padnet_dist.config import load_config
from padnet_dist.data.cityscapes_labels import EVAL_LABEL_IDS
from padnet_dist.data.synthetic_scene import SYNTHETIC_PALETTE
from padnet_dist.eval import predict as P
from padnet_dist.eval.cityscapes import CityscapesEvaluator
from tests.helpers.checkpoint import write_checkpoint


def _png(path) -> Image.Image:
    return Image.open(io.BytesIO(open(path, "rb").read()))


TINY = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "tiny.yaml")


def _checkpoint(run_dir, *overrides: str) -> str:
    """A committed checkpoint of a tiny model, as training writes it."""
    return write_checkpoint(str(run_dir), load_config(TINY, list(overrides)), step=1, phase=1)


def _expected(ckpt: str, rgb: np.ndarray):
    """The checkpoint's predictions for one uint8 image, computed directly."""
    from padnet_dist.data.augment import normalise_rgb
    from padnet_dist.eval.inference import load_checkpoint_model

    model = load_checkpoint_model(ckpt).model
    return P.predict_batch(model, normalise_rgb(torch.from_numpy(rgb).permute(2, 0, 1))[None])


def _write_images(folder, names_sizes, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = {}
    for rel, (h, w) in names_sizes.items():
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(path, quality=95) if rel.endswith(".jpg") else Image.fromarray(rgb).save(path)
        images[rel] = np.array(Image.open(path).convert("RGB"))
    return images


def test_predict_folder_writes_panels_and_decodable_depth(tmp_path, capsys):
    ckpt = _checkpoint(str(tmp_path / "run"))
    images = _write_images(tmp_path / "in", {"a.png": (24, 40), "sub/b.jpg": (30, 26)})
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", ckpt, "--input", str(tmp_path / "in"), "--out", str(out)]) == 0
    assert "2 images" in capsys.readouterr().out
    for rel, rgb in images.items():
        stem = os.path.splitext(os.path.basename(rel))[0]
        h, w = rgb.shape[:2]
        semantic = _png(out / f"{stem}_semantic.png")
        assert semantic.mode == "RGB" and semantic.size == (w, h)
        assert _png(out / f"{stem}_depth.png").mode == "RGB" and _png(out / f"{stem}_depth.png").size == (w, h)
        assert _png(out / f"{stem}_panel.png").size == (3 * w, h)
        depth16 = _png(out / f"{stem}_depth16.png")
        assert depth16.mode == "I;16" and depth16.size == (w, h)
        train_ids, depth_m = _expected(ckpt, rgb)
        decoded = P.decode_depth_png16((out / f"{stem}_depth16.png").read_bytes())
        assert np.max(np.abs(decoded - np.clip(depth_m[0], 1 / 256, None))) <= 1 / 256
        # semantic colours are the synthetic dataset's palette (8 classes) applied to the predicted ids
        np.testing.assert_array_equal(np.asarray(semantic), P.colorize_semantic(train_ids[0], SYNTHETIC_PALETTE))
        np.testing.assert_array_equal(np.asarray(_png(out / f"{stem}_panel.png"))[:, :w], rgb)


def test_predict_manifest_names_outputs_by_sample_key(tmp_path):
    from padnet_dist.data.converters.synthetic import SyntheticScene, dataset_info, load_scene
    from padnet_dist.data.writer import write_shards

    jobs = [SyntheticScene(3, i, 20, 28) for i in range(3)]
    manifest = write_shards(
        jobs, load_scene, out_url=str(tmp_path / "s"), split="val", info=dataset_info(), progress=False
    )
    ckpt = _checkpoint(str(tmp_path / "run"))
    url = str(tmp_path / "s" / "val.manifest.json")
    assert main(["predict", "--config", TINY, "--checkpoint", ckpt, "--input", url, "--out", str(tmp_path / "o")]) == 0
    keys = [k for s in manifest.shards for k in s.keys]
    assert sorted(p.name for p in (tmp_path / "o").glob("*_panel.png")) == sorted(f"{k}_panel.png" for k in keys)
    assert _png(tmp_path / "o" / f"{keys[0]}_depth16.png").size == (28, 20)


def test_predict_cityscapes_format_round_trips_through_official_evaluation(tmp_path):
    from padnet_dist.data.cityscapes_labels import train_ids_to_label_ids
    from padnet_dist.eval.cityscapes import evaluate_folder

    ckpt = _checkpoint(str(tmp_path / "run"), "model.num_classes=19")
    frames = {"frankfurt_000000_000294": (16, 32), "lindau_000001_000019": (20, 24)}
    inputs = {f"leftImg8bit/val/{n.split('_')[0]}/{n}_leftImg8bit.png": hw for n, hw in frames.items()}
    images = _write_images(tmp_path / "cs", inputs)
    out = tmp_path / "pred"
    args = ["predict", "--checkpoint", ckpt, "--input", str(tmp_path / "cs" / "leftImg8bit"), "--out", str(out)]
    assert main([*args, "--format", "cityscapes"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}_pred.png" for n in frames)
    gt_root = tmp_path / "gt"
    for rel, rgb in images.items():
        frame = P.cityscapes_frame_name(rel)
        pred = _png(out / f"{frame}_pred.png")
        assert pred.mode == "L" and pred.size == (rgb.shape[1], rgb.shape[0])
        labels = np.asarray(pred)
        assert set(np.unique(labels)) <= set(EVAL_LABEL_IDS)
        train_ids, _ = _expected(ckpt, rgb)
        np.testing.assert_array_equal(labels, train_ids_to_label_ids(train_ids[0]))
        # ground truth: the expected labels, with the left half replaced by 'road' (7)
        gt = labels.copy()
        gt[:, : gt.shape[1] // 2] = 7
        city_dir = gt_root / "gtFine" / "val" / frame.split("_")[0]
        city_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gt).save(city_dir / f"{frame}_gtFine_labelIds.png")
        Image.fromarray(gt.astype(np.uint16)).save(city_dir / f"{frame}_gtFine_instanceIds.png")
    result = evaluate_folder(out, gt_root, "val")
    direct = CityscapesEvaluator()
    for rel in images:
        frame = P.cityscapes_frame_name(rel)
        city = frame.split("_")[0]
        gt = np.asarray(Image.open(gt_root / "gtFine" / "val" / city / f"{frame}_gtFine_labelIds.png"))
        direct.update(np.asarray(_png(out / f"{frame}_pred.png")), gt, gt.astype(np.int64))
    assert result["iou_class"] == pytest.approx(direct.compute()["iou_class"])
    assert result["num_images"] == 2


def test_predict_errors_are_one_line(tmp_path, capsys):
    ckpt = _checkpoint(str(tmp_path / "run"))
    (tmp_path / "empty").mkdir()
    assert (
        main(["predict", "--checkpoint", ckpt, "--input", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    )
    assert "no .png/.jpg images" in capsys.readouterr().err
    _write_images(tmp_path / "in", {"x.png": (8, 8)})
    args = ["predict", "--checkpoint", ckpt, "--input", str(tmp_path / "in"), "--out", str(tmp_path / "o")]
    assert main([*args, "--format", "cityscapes"]) == 2
    assert "19-class" in capsys.readouterr().err
