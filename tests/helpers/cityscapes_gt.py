"""Writes a tiny Cityscapes ground-truth folder in the real layout and encodings, plus matching predictions.

gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png   8-bit label ids 0..33
gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_instanceIds.png 16-bit: label_id*1000+k for instances,
                                                                          the plain label id elsewhere
Predictions: {pred_dir}/{city}_{seq:06d}_{frame:06d}_pred.png, 8-bit label ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

STUFF_IDS = (0, 1, 3, 4, 6, 7, 8, 9, 11, 12, 13, 14, 17, 19, 20, 21, 22, 23)
INSTANCE_IDS = (24, 25, 26, 27, 28, 29, 30, 31, 32, 33)  # 29 caravan, 30 trailer: instances, ignored in eval


@dataclass
class Frame:
    gt_labels: Path
    gt_instances: Path
    pred: Path
    labels: np.ndarray
    instances: np.ndarray
    prediction: np.ndarray


def make_frame(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blocky random (label ids uint8, instance ids uint16, predicted label ids uint8) of one frame."""
    block = max(height // 8, 1)
    coarse = rng.choice(STUFF_IDS, size=(height // block + 1, width // block + 1))
    labels = np.kron(coarse, np.ones((block, block), dtype=np.int64))[:height, :width].astype(np.uint8)
    instances = labels.astype(np.uint16)
    counters: dict[int, int] = {}
    for _ in range(int(rng.integers(4, 10))):
        label_id = int(rng.choice(INSTANCE_IDS))
        h = int(rng.integers(2, max(3, height // 3)))
        w = int(rng.integers(2, max(3, width // 3)))
        top, left = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        labels[top : top + h, left : left + w] = label_id
        if rng.random() < 0.2:  # a group region: the class id without an instance number
            instances[top : top + h, left : left + w] = label_id
        else:
            k = counters.get(label_id, 0)
            counters[label_id] = k + 1
            instances[top : top + h, left : left + w] = label_id * 1000 + k
    prediction = labels.copy()
    for _ in range(int(rng.integers(5, 15))):
        h, w = int(rng.integers(1, height // 2)), int(rng.integers(1, width // 2))
        top, left = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        prediction[top : top + h, left : left + w] = rng.integers(0, 34)
    noise = rng.random((height, width)) < 0.05
    prediction[noise] = rng.integers(0, 34, size=int(noise.sum()))
    return labels, instances, prediction


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_fixture(
    gt_root: Path,
    pred_dir: Path,
    *,
    split: str = "val",
    cities: tuple[str, ...] = ("frankfurt", "lindau"),
    frames_per_city: int = 2,
    size: tuple[int, int] = (64, 128),
    seed: int = 0,
) -> list[Frame]:
    """Writes ground truth under gt_root/gtFine/{split} and predictions in pred_dir; returns the frames."""
    rng = np.random.default_rng(seed)
    frames = []
    for city in cities:
        for i in range(frames_per_city):
            stem = f"{city}_{i:06d}_{19 * i + 7:06d}"
            labels, instances, prediction = make_frame(rng, *size)
            folder = gt_root / "gtFine" / split / city
            frame = Frame(
                gt_labels=folder / f"{stem}_gtFine_labelIds.png",
                gt_instances=folder / f"{stem}_gtFine_instanceIds.png",
                pred=pred_dir / f"{stem}_pred.png",
                labels=labels,
                instances=instances,
                prediction=prediction,
            )
            write_png(frame.gt_labels, labels)
            write_png(frame.gt_instances, instances)
            write_png(frame.pred, prediction)
            frames.append(frame)
    return frames
