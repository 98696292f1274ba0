"""Parameters and GFLOPs of PAD-Net-ResNet-101 with distillation A, B and C at 640x640 (Cityscapes preset), and of
every ablation preset with the dataset preset its header names.

Run: ``.venv/bin/python bench/model_cost.py [--ablations]``. Prints a Markdown table (the ones in docs/model.md).
GFLOPs: one forward pass of batch 1, 2 FLOPs per multiply-accumulate (``FlopCounterMode``), measured on the
``meta`` device, so the numbers depend only on shapes and the run takes seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

from padnet_dist.commands.model import measure_model
from padnet_dist.config import load_config

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "configs" / "cityscapes.yaml"
ROWS = (
    ("Front-end + DE + SP (baseline)", ["model.variant=frontend"]),
    ("PAD-Net, distillation A", ["model.distillation=A"]),
    ("PAD-Net, distillation B", ["model.distillation=B"]),
    ("PAD-Net, distillation C", ["model.distillation=C"]),
)


def ablations() -> None:
    """One line per ``# paper:`` row of ``configs/ablations/*.yaml``, measured with the ``# dataset:`` preset."""
    print("| paper row | preset | dataset | params (M) | GFLOPs |")
    print("|---|---|---|---:|---:|")
    for path in sorted((REPO / "configs" / "ablations").glob("*.yaml")):
        lines = path.read_text().splitlines()
        dataset = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("# dataset:"))
        cfg = load_config([REPO / dataset, path])
        cost = measure_model(cfg.model, cfg.data.crop_height, cfg.data.crop_width)
        for line in (line for line in lines if line.startswith("# paper:")):
            row = " / ".join(f.strip() for f in line.split(":", 1)[1].split("|"))
            print(f"| {row} | `{path.name}` | {Path(dataset).stem} | {cost.params / 1e6:.2f} | {cost.gflops:.1f} |")


def main() -> None:
    if "--ablations" in sys.argv[1:]:
        ablations()
        return
    cfg = load_config(PRESET)
    height, width = cfg.data.crop_height, cfg.data.crop_width
    print(f"ResNet-101, output stride {cfg.model.output_stride}, N={cfg.model.width}, {cfg.model.num_classes} classes,")
    print(f"input 1x3x{height}x{width}; GFLOPs = 2 x multiply-accumulates of one forward pass\n")
    print("| model | parameters (M) | GFLOPs |")
    print("|---|---:|---:|")
    for label, overrides in ROWS:
        cost = measure_model(load_config(PRESET, overrides).model, height, width)
        print(f"| {label} | {cost.params / 1e6:.2f} | {cost.gflops:.1f} |")


if __name__ == "__main__":
    main()
