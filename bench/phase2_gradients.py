"""The weighted gradient norm of each loss term at the start of phase 2: which term a global grad clip answers to.

Builds the phase-2 network of ``--config`` (the demo preset by default), loads a phase-1 checkpoint (the front end
and the scene-parsing head it trained; the other heads, the distillation and the decoders keep the init the
checkpoint holds), takes one training batch and prints, per term, the loss and the norm of ``w_i * dL_i/dtheta``
over all parameters and over the front end. ``--reinit`` re-initialises every module phase 1 did not train with
this code's init, to compare an older checkpoint's init with the current one.
Not a test: prints figures. Run (seconds): ``.venv/bin/python bench/phase2_gradients.py --checkpoint
runs/demo/run/phase1 [--reinit] [key=value ...]``.
"""

from __future__ import annotations

import argparse

import torch

from padnet_dist.config import load_config
from padnet_dist.data.loader import build_train_loader
from padnet_dist.model import build_model
from padnet_dist.storage import storage_for
from padnet_dist.train.checkpoint import read_model_state, resolve_checkpoint
from padnet_dist.train.objective import compute_losses
from padnet_dist.world import World


def _norm(grads: list[torch.Tensor | None]) -> float:
    return float(torch.sqrt(sum((g.pow(2).sum() for g in grads if g is not None), torch.tensor(0.0))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--checkpoint", required=True, help="a phase-1 checkpoint or phase dir")
    parser.add_argument("--reinit", action="store_true", help="re-initialise what phase 1 did not train")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = load_config([args.config], ["phase=2", *args.overrides])
    torch.manual_seed(cfg.data.seed)
    model = build_model(cfg.model)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    url = resolve_checkpoint(args.checkpoint, cfg.storage)
    state = read_model_state(url, storage_for(url, cfg.storage))
    if args.reinit:
        trained = {id(p) for p in model.phase_parameters(1)}
        modules = {n for n, m in model.named_modules() if any(id(p) in trained for p in m.parameters(recurse=False))}
        state = {k: v if k.rsplit(".", 1)[0] in modules else fresh[k] for k, v in state.items()}
    model.load_state_dict(state)
    model.train()
    loader = build_train_loader(cfg.data, World(), storage_cfg=cfg.storage)
    loader.set_epoch(0)
    batch = next(iter(loader))
    losses = compute_losses(model(batch["rgb"]), batch, cfg.loss, cfg.data.ignore_index)
    params = list(model.parameters())
    num_frontend = len(list(model.frontend.parameters()))  # registered first: the leading parameters
    print(f"{'term':16s}{'loss':>10s}{'|w*grad| all':>14s}{'front end':>11s}")
    for name, loss in losses.items():
        if name == "total":
            continue
        grads = torch.autograd.grad(getattr(cfg.loss, name) * loss, params, retain_graph=True, allow_unused=True)
        every, front = _norm(list(grads)), _norm(list(grads[:num_frontend]))
        print(f"{name:16s}{float(loss.detach()):10.3f}{every:14.2f}{front:11.2f}")


if __name__ == "__main__":
    main()
