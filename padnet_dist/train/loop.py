"""``train(cfg, world)``: the one training path every launcher (torchrun, --nproc, srun, Ray) calls."""

from __future__ import annotations

import time
from typing import Any

import torch

from padnet_dist.collectives import any_rank, barrier
from padnet_dist.config import Config
from padnet_dist.distributed import choose_backend, choose_device
from padnet_dist.errors import UserError
from padnet_dist.storage import join_url, storage_for
from padnet_dist.train import checkpoint
from padnet_dist.train import engine as seam
from padnet_dist.train.hooks import TrainHooks
from padnet_dist.train.logging import RunLogger
from padnet_dist.train.objective import compute_losses
from padnet_dist.train.rng import rng_state, seed_everything, set_rng_state
from padnet_dist.train.schedule import lr_at
from padnet_dist.train.stop import StopRequest
from padnet_dist.world import World

TARGETS = ("semantic", "depth", "normals", "contour", "valid")


def train(cfg: Config, world: World, *, hooks: TrainHooks | None = None) -> dict[str, Any]:
    """Train phase ``cfg.phase`` on this rank of ``world``; return a summary (losses are this rank's).

    Phase 1 trains the front end with scene parsing only; phase 2 trains the whole network with all six
    losses, starting from phase 1's final checkpoint (paper §4.1). Resumes per ``run.resume``. Ends with a
    committed checkpoint: at the last step, at ``run.max_steps``, or after the step during which SIGTERM came
    or ``hooks.should_stop()`` said so. ``hooks``: a launcher's part in the loop (``TrainHooks``).
    """
    hooks = hooks if hooks is not None else TrainHooks()
    # SIGTERM (scancel, a time limit's --signal, a preemption, a launcher stopping its ranks) from here on is
    # noted, not fatal: the ranks agree after a step, commit a checkpoint and return. Set first, so that a
    # signal during setup still ends in a commit after the first step.
    stop = StopRequest()
    phase = cfg.phase
    phase_cfg = cfg.phases.phase1 if phase == 1 else cfg.phases.phase2
    phase_dir = checkpoint.phase_dir(cfg.run.dir, phase)
    storage = storage_for(cfg.run.dir, cfg.storage)

    # Where the weights come from is settled first, so a wrong run dir fails before any rank waits for another.
    resume_url = checkpoint.resolve_resume(cfg, storage)
    init_url = checkpoint.resolve_phase2_init(cfg, storage) if resume_url is None and phase == 2 else None
    for url in (resume_url, init_url):
        if url is not None:
            checkpoint.check_model_matches(url, cfg.model, storage)

    from padnet_dist.data.loader import build_train_loader

    loader = build_train_loader(cfg.data, world, storage_cfg=cfg.storage)
    accum = cfg.optim.grad_accum_steps
    steps_per_epoch = len(loader) // accum
    if steps_per_epoch < 1:
        raise UserError(
            f"one epoch has {len(loader)} batches per rank, fewer than optim.grad_accum_steps={accum}: "
            "use more data, fewer ranks or a smaller data.batch_size"
        )
    total_steps = steps_per_epoch * phase_cfg.epochs
    stop_step = min(total_steps, cfg.run.max_steps) if cfg.run.max_steps else total_steps

    resumed_step = checkpoint.committed_step(resume_url, storage) if resume_url is not None else -1
    if resumed_step >= stop_step:
        # Nothing left (a requeued or resubmitted job after the phase ended): return before any rank waits
        # for another, so the job ends at once and an afterok dependency on it fires.
        stop.restore()
        step = resumed_step
        return {"phase": phase, "step": step, "total_steps": total_steps, "finished": step >= total_steps,
                "stopped_by_signal": False, "checkpoint": resume_url, "resumed_from": resume_url,
                "initialised_from": None, "losses": {}, "samples_per_s": 0.0, "world_size": world.world_size}  # fmt: skip

    device = choose_device(cfg.engine, world)
    seam.check_precision(cfg.engine, device)
    seam.set_determinism(cfg.engine.deterministic, device)
    seam.init_distributed(world, choose_backend(cfg.engine, device))
    seed_everything(cfg.data.seed)

    model = _build_model(cfg, storage, resumed=resume_url is not None, init_url=init_url)
    trained = {id(p) for p in model.phase_parameters(phase)}
    for p in model.parameters():
        p.requires_grad_(id(p) in trained)
    outputs = model.phase_outputs(phase)
    model = seam.prepare_model(model, cfg.engine, device)
    optimizer = seam.make_optimizer(
        [p for p in model.parameters() if p.requires_grad], phase_cfg.lr, cfg.optim.momentum, cfg.optim.weight_decay
    )
    engine = seam.wrap(model, optimizer, cfg, world, device)

    step = 0
    if resume_url is not None:
        state = checkpoint.load(engine, ckpt_url=resume_url, cfg=cfg, world=world, storage=storage)
        step = state.step
        try:
            loader.load_state_dict(state.loader_state)
        except ValueError as e:
            raise UserError(f"checkpoint {resume_url}: {e}") from None
        set_rng_state(state.rng_state)
    saved_step = step if resume_url is not None else -1

    logger = RunLogger(
        phase_dir_url=phase_dir,
        world=world,
        storage=storage,
        tensorboard=cfg.run.tensorboard,
        progress_bar=cfg.run.progress_bar,
        total_steps=stop_step,
        initial_step=step,
        description=f"phase {phase}",
    )
    samples_per_step = cfg.data.batch_size * accum
    last: dict[str, float] = {}
    started = time.perf_counter()
    first_step = step

    def save_checkpoint() -> str:
        url = checkpoint.checkpoint_url(phase_dir, step)
        checkpoint.save(
            engine,
            ckpt_url=url,
            cfg=cfg,
            world=world,
            step=step,
            epoch=step // steps_per_epoch,
            loader_state=loader.state_dict(),
            rng_state=rng_state(),
            storage=storage,
            extra_uploads=logger.uploads(),
        )
        hooks.on_commit(url, step, {"step": float(step), **last})
        return url

    engine.train()
    while step < stop_step and not stop.agreed:
        epoch = step // steps_per_epoch
        loader.set_epoch(epoch)  # a no-op mid-epoch: a resumed loader yields the rest of its restored epoch
        batches = iter(loader)
        while step < stop_step and step // steps_per_epoch == epoch and not stop.agreed:
            lr = lr_at(step, base_lr=phase_cfg.lr, total_steps=total_steps, schedule=cfg.optim.schedule,
                       warmup_steps=cfg.optim.warmup_steps, poly_power=cfg.optim.poly_power)  # fmt: skip
            seam.set_lr(optimizer, lr)
            logging_step = (step + 1) % cfg.run.log_every_steps == 0 or step + 1 == stop_step
            data_wait_s = compute_s = 0.0
            terms: dict[str, torch.Tensor] = {}
            for _ in range(accum):
                t0 = time.perf_counter()
                batch = next(batches, None)
                if batch is None:
                    raise UserError(f"the loader ended epoch {epoch} early: its len() ({len(loader)}) is wrong")
                t1 = time.perf_counter()
                rgb = batch["rgb"].to(device, non_blocking=True)
                targets = {k: batch[k].to(device, non_blocking=True) for k in TARGETS if k in batch}
                with seam.autocast(cfg.engine, device):
                    predictions = engine(rgb, outputs=outputs)
                predictions = {k: v.float() for k, v in predictions.items()}
                losses = compute_losses(predictions, targets, cfg.loss, cfg.data.ignore_index)
                # backward() all-reduces gradients across ranks (a sync point) on the last micro-batch of a step;
                # step() updates only then.
                engine.backward(losses["total"])
                engine.step()
                terms = {k: terms.get(k, 0.0) + v.detach() / accum for k, v in losses.items()}
                if logging_step and device.type == "cuda":
                    torch.cuda.synchronize()  # GPU kernels run asynchronously: wait so compute_s is the real time
                data_wait_s += t1 - t0
                compute_s += time.perf_counter() - t1
            step += 1

            if logging_step:
                last = {k: float(v) for k, v in terms.items()}  # float() of a GPU tensor syncs; log steps only
                logger.log(
                    {
                        "step": step,
                        "epoch": epoch,
                        **last,
                        "lr": lr,
                        "samples_per_s": samples_per_step / max(data_wait_s + compute_s, 1e-9),
                        "data_wait_s": data_wait_s,
                        "compute_s": compute_s,
                        "num_corrupt_skipped": loader.stats.num_corrupt_skipped,
                        "time": time.time(),
                    }
                )
            logger.advance()
            if cfg.run.checkpoint_every_steps and step % cfg.run.checkpoint_every_steps == 0:
                save_checkpoint()
                saved_step = step
            # A sync point: all ranks must stop after the same step, or the others would wait in the next
            # all-reduce; a signal seen by any rank stops every rank.
            # should_stop() first: it may be a collective, so no rank may skip it by short-circuiting.
            stop.agreed = any_rank(hooks.should_stop() or stop.requested)

        if step % steps_per_epoch == 0 and _eval_due(cfg, step // steps_per_epoch, phase_cfg.epochs):
            _evaluate(engine, cfg, world, device, logger, step)
            # a signal or a launcher's stop during evaluation stops before the next epoch; an agreement already
            # reached stays (it is the same on every rank, so should_stop() is still called everywhere)
            stop.agreed = any_rank(hooks.should_stop() or stop.requested or stop.agreed)

    final_url = checkpoint.checkpoint_url(phase_dir, step)
    if step != saved_step:
        final_url = save_checkpoint()
    logger.close(storage)
    # Sync point: no rank returns (and exits) before rank 0 has written COMMITTED; srun --kill-on-bad-exit
    # would otherwise stop rank 0 mid-commit as soon as another rank exited 75.
    barrier()
    stop.restore()
    elapsed_s = time.perf_counter() - started
    return {
        "phase": phase,
        "step": step,
        "total_steps": total_steps,
        "finished": step >= total_steps,
        "stopped_by_signal": stop.agreed,
        "checkpoint": final_url,
        "resumed_from": resume_url,
        "initialised_from": init_url,
        "losses": last,
        "samples_per_s": (step - first_step) * samples_per_step * world.world_size / max(elapsed_s, 1e-9),
        "world_size": world.world_size,
    }


def _build_model(cfg: Config, storage, *, resumed: bool, init_url: str | None) -> torch.nn.Module:
    """The bare network: ImageNet backbone for a fresh phase 1, phase 1's weights for a fresh phase 2.

    A resumed phase gets its weights from the engine state instead, so nothing is loaded here.
    """
    from padnet_dist.model import build_model

    if not resumed and cfg.phase == 1:
        from padnet_dist.train.pretrained import build_model_from_config

        return build_model_from_config(cfg.model, cfg.storage)
    model = build_model(cfg.model)
    if init_url is not None:
        model.load_state_dict(checkpoint.read_model_state(init_url, storage))
    return model


def _eval_due(cfg: Config, epochs_done: int, num_epochs: int) -> bool:
    if not cfg.data.val_manifest:
        return False
    every = cfg.run.eval_every_epochs
    return epochs_done == num_epochs or (every > 0 and epochs_done % every == 0)


def _evaluate(engine, cfg: Config, world: World, device: torch.device, logger: RunLogger, step: int) -> None:
    """Score this phase's outputs on ``data.val_manifest``; rank 0 writes ``{phase_dir}/eval/step-*.json``."""
    from padnet_dist.eval.evaluate import evaluate_split
    from padnet_dist.eval.report import write_metrics_json

    model = seam.bare_module(engine)
    metrics = evaluate_split(
        model,
        data_cfg=cfg.data,
        storage_cfg=cfg.storage,
        world=world,
        device=device,
        num_classes=cfg.model.num_classes,
        depth_target=cfg.data.depth_target,
        outputs=model.phase_outputs(cfg.phase),
    )
    engine.train()
    flat = {f"val/{t}/{k}": v for t in ("depth", "semantic") for k, v in metrics.get(t, {}).items()}
    logger.log({"step": step, **{k: v for k, v in flat.items() if isinstance(v, (int, float))}})
    if world.is_main:
        url = join_url(checkpoint.phase_dir(cfg.run.dir, cfg.phase), "eval", f"step-{step:09d}.json")
        write_metrics_json(url, metrics, storage_cfg=cfg.storage)
