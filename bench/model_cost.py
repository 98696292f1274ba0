"""Parameters and GFLOPs of PAD-Net-ResNet-101 with distillation A, B and C at 640x640 (Cityscapes preset).

Run: ``.venv/bin/python bench/model_cost.py``. Prints a Markdown table (the one in docs/model.md).
GFLOPs: one forward pass of batch 1, 2 FLOPs per multiply-accumulate (``FlopCounterMode``), measured on the
``meta`` device, so the numbers depend only on shapes and the run takes seconds.
"""

from __future__ import annotations

from pathlib import Path

from padnet_dist.commands.model import measure_model
from padnet_dist.config import load_config

PRESET = Path(__file__).resolve().parents[1] / "configs" / "cityscapes.yaml"
ROWS = (
    ("Front-end + DE + SP (baseline)", ["model.variant=frontend"]),
    ("PAD-Net, distillation A", ["model.distillation=A"]),
    ("PAD-Net, distillation B", ["model.distillation=B"]),
    ("PAD-Net, distillation C", ["model.distillation=C"]),
)


def main() -> None:
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
