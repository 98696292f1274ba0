"""Checkpoint size of PAD-Net-ResNet-101 (``configs/cityscapes.yaml``'s model) in bytes per parameter.

Builds the phase-2 network (every parameter trained) in a DeepSpeed engine on one CPU rank, takes one SGD step on
a random 64x64 image (so that the momentum buffers exist, as in any checkpoint after the first step) and saves
one checkpoint, for ZeRO stages 0 and 1 (the Cityscapes preset's). Not a test: prints figures.
Run: ``.venv/bin/python bench/checkpoint_size.py`` (about a minute; 3-4 GB of memory).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
sys.path.insert(0, str(REPO))

from padnet_dist.config import load_config, to_yaml  # noqa: E402
from padnet_dist.launch.env import free_port  # noqa: E402
from padnet_dist.model import build_model  # noqa: E402
from padnet_dist.storage import storage_for  # noqa: E402
from padnet_dist.train import checkpoint  # noqa: E402
from padnet_dist.train import engine as seam  # noqa: E402
from padnet_dist.world import World  # noqa: E402


def checkpoint_bytes(zero_stage: int, world: World, out_dir: str) -> tuple[int, dict[str, int]]:
    """(number of parameters, {file: bytes}) of one phase-2 checkpoint under ZeRO ``zero_stage``."""
    cfg = load_config(
        REPO / "configs/cityscapes.yaml",
        ["phase=2", "model.pretrained=''", "engine.device=cpu", "engine.backend=gloo", "engine.precision=fp32",
         "engine.sync_batchnorm=false", f"engine.zero_stage={zero_stage}", f"run.dir={out_dir}"],
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg.model)
    optimizer = seam.make_optimizer(model.parameters(), 1e-5, cfg.optim.momentum, cfg.optim.weight_decay)
    engine = seam.wrap(model, optimizer, cfg, world, torch.device("cpu"))
    outputs = engine(torch.randn(1, 3, 64, 64))
    engine.backward(sum(v.float().mean() for v in outputs.values()))
    engine.step()
    url = checkpoint.checkpoint_url(checkpoint.phase_dir(out_dir, 2), 1)
    state = checkpoint.TrainerState(step=1, epoch=0, loader_state={}, rng_state={})
    checkpoint.save(engine, state, ckpt_url=url, phase=2, phase_dir_url=checkpoint.phase_dir(out_dir, 2),
                    keep_last=1, config_yaml=to_yaml(cfg), world=world, storage=storage_for(out_dir))  # fmt: skip
    files = json.loads(Path(url, checkpoint.COMMIT_MARKER).read_text())["files"]
    return sum(p.numel() for p in model.parameters()), files


def main() -> None:
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    world = World(master_port=free_port())
    seam.init_distributed(world, "gloo")
    print("PAD-Net-ResNet-101 (configs/cityscapes.yaml model), phase 2, one CPU rank, fp32 weights, SGD momentum")
    for zero_stage in (0, 1):
        with tempfile.TemporaryDirectory(prefix="padnet-size-") as tmp:
            num_params, files = checkpoint_bytes(zero_stage, world, tmp)
        total = sum(files.values())
        engine_bytes = sum(v for k, v in files.items() if k.startswith("engine/"))
        print(
            f"ZeRO-{zero_stage}: {num_params / 1e6:.1f} M parameters, checkpoint {total / 1e9:.3f} GB = "
            f"{total / num_params:.2f} bytes/parameter (DeepSpeed files {engine_bytes / num_params:.2f}); "
            f"with the former model.pt copy: {(total + 4 * num_params) / num_params:.2f}"
        )


if __name__ == "__main__":
    main()
