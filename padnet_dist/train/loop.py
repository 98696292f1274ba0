"""``train(cfg, world)``: the one training path every launcher (torchrun, --nproc, srun, Ray) calls.

``plan_phase`` settles what a phase resumes from and how long it runs (cheap: no process group yet);
``Trainer.__init__`` builds everything a step needs; ``Trainer.train_step`` trains one optimiser step and
``Trainer.fit`` runs the phase: steps, checkpoints, the ranks' agreement to stop, evaluation.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from padnet_dist.collectives import any_rank, barrier
from padnet_dist.config import Config, PhaseConfig, to_yaml
from padnet_dist.distributed import choose_backend, choose_device
from padnet_dist.errors import UserError
from padnet_dist.storage import StorageError, join_url, storage_for
from padnet_dist.train import checkpoint
from padnet_dist.train import engine as seam
from padnet_dist.train.hooks import TrainHooks
from padnet_dist.train.logging import RunLogger
from padnet_dist.train.objective import compute_losses
from padnet_dist.train.phase_init import check_phase1_init, load_phase1_state
from padnet_dist.train.rng import rng_state, seed_everything, set_rng_state
from padnet_dist.train.schedule import lr_at
from padnet_dist.train.stop import StopRequest
from padnet_dist.train.uploader import CheckpointUploader
from padnet_dist.world import World

TARGETS = ("semantic", "depth", "normals", "contour", "valid")


def train(cfg: Config, world: World, *, hooks: TrainHooks | None = None) -> dict[str, Any]:
    """Train phase ``cfg.phase`` on this rank of ``world``; return a summary (losses are this rank's).

    Phase 1 trains the front end with scene parsing only; phase 2 trains the whole network with all six
    losses, starting from phase 1's final checkpoint (paper §4.1). Resumes per ``run.resume``. Ends with a
    committed checkpoint: at the last step, at ``run.max_steps``, or after the step during which SIGTERM came
    or ``hooks.should_stop()`` said so. ``hooks``: a launcher's part in the loop (``TrainHooks``).
    """
    # SIGTERM (scancel, a time limit's --signal, a preemption, a launcher stopping its ranks) from here on is
    # noted, not fatal: the ranks agree after a step, commit a checkpoint and return. Set first, so that a
    # signal during setup still ends in a commit after the first step.
    stop = StopRequest()
    plan = plan_phase(cfg, world)
    if plan.resumed_step >= plan.stop_step:
        # Nothing left (a requeued or resubmitted job after the phase ended): return before any rank waits
        # for another, so the job ends at once and an afterok dependency on it fires.
        stop.restore()
        return plan.summary(world, step=plan.resumed_step, checkpoint_url=plan.resume_url)
    trainer = Trainer(plan.cfg, world, plan, hooks=hooks if hooks is not None else TrainHooks(), stop=stop)
    return trainer.fit()


@dataclass(frozen=True)
class PhasePlan:
    """What a phase starts from and how long it runs, settled before any rank waits for another."""

    cfg: Config  # as run: optim.grad_accum_steps adjusted when resuming on another world size (run.on_resize)
    phase: int
    phase_cfg: PhaseConfig
    phase_dir: str
    storage: Any
    resume_url: str | None  # the committed checkpoint this phase continues, or None
    init_url: str | None  # phase 1's checkpoint a fresh phase 2 starts from, or None
    resumed_step: int  # the step resume_url holds; -1 without one
    loader: Any  # resumed to the checkpoint's position already
    steps_per_epoch: int  # of a whole epoch with this run's geometry
    first_epoch: int  # the epoch this run starts in
    first_epoch_end: int  # the step that ends it (a resumed epoch may have fewer steps left than a whole one)
    total_steps: int  # of the whole phase
    stop_step: int  # where this run stops: total_steps or run.max_steps

    def epoch_at(self, step: int) -> int:
        """The epoch optimiser step ``step`` (0-based) belongs to."""
        if step < self.first_epoch_end:
            return self.first_epoch
        return self.first_epoch + 1 + (step - self.first_epoch_end) // self.steps_per_epoch

    def summary(self, world: World, *, step: int, checkpoint_url: str | None, **extra: Any) -> dict[str, Any]:
        out = {"phase": self.phase, "step": step, "total_steps": self.total_steps,
               "finished": step >= self.total_steps, "stopped_by_signal": False, "checkpoint": checkpoint_url,
               "resumed_from": self.resume_url, "initialised_from": None, "losses": {}, "samples_per_s": 0.0,
               "world_size": world.world_size}  # fmt: skip
        return {**out, **extra}


def plan_phase(cfg: Config, world: World) -> PhasePlan:
    """Resolve the checkpoints (a wrong run dir fails here, before any rank waits for another) and the loader."""
    phase = cfg.phase
    phase_cfg = cfg.phases.phase1 if phase == 1 else cfg.phases.phase2
    phase_dir = checkpoint.phase_dir(cfg.run.dir, phase)
    storage = storage_for(cfg.run.dir, cfg.storage)
    resume_url = checkpoint.resolve_resume(cfg.run.resume, phase_dir, storage)
    init_url = None
    if resume_url is None and phase == 2:
        init_url = checkpoint.resolve_phase2_init(cfg.phases.phase2.init_from, cfg.run.dir, storage)
    if resume_url is not None:
        checkpoint.check_model_matches(resume_url, cfg.model, storage)
    if init_url is not None:  # another model config may have trained it: phase 1 must be this model's
        check_phase1_init(init_url, cfg.model, storage)

    from padnet_dist.data.loader import build_train_loader

    pin_memory = cfg.data.pin_memory and choose_device(cfg.engine, world).type == "cuda"
    loader = build_train_loader(cfg.data, world, storage_cfg=cfg.storage, pin_memory=pin_memory)
    resumed_step, first_epoch = -1, 0
    if resume_url is not None:
        checkpoint.check_resumable(resume_url, zero_stage=cfg.engine.zero_stage, world=world, storage=storage)
        cfg, resize_message = _accumulation_for(cfg, resume_url, world, storage)
        resumed_step = checkpoint.committed_step(resume_url, storage)
        first_epoch = checkpoint.committed_epoch(resume_url, storage)
        try:
            loader.load_state_dict(checkpoint.read_loader_state(resume_url, world, storage))
        except ValueError as e:
            raise UserError(f"checkpoint {resume_url}: {e}") from None
        if resize_message and world.is_main:
            left = loader.num_batches_left if loader.epoch == first_epoch else len(loader)
            print(f"{resize_message}; epoch {first_epoch} continues with {left} batches per rank", file=sys.stderr,
                  flush=True)  # fmt: skip
    accum = cfg.optim.grad_accum_steps
    steps_per_epoch = len(loader) // accum
    if steps_per_epoch < 1:
        raise UserError(
            f"one epoch has {len(loader)} batches per rank, fewer than optim.grad_accum_steps={accum}: "
            "use more data, fewer ranks or a smaller data.batch_size"
        )
    first_epoch_end = steps_per_epoch
    if resume_url is not None:
        left = loader.num_batches_left if loader.epoch == first_epoch else len(loader)
        first_epoch_end = resumed_step + left // accum
    total_steps = first_epoch_end + steps_per_epoch * (phase_cfg.epochs - first_epoch - 1)
    return PhasePlan(
        cfg=cfg,
        phase=phase,
        phase_cfg=phase_cfg,
        phase_dir=phase_dir,
        storage=storage,
        resume_url=resume_url,
        init_url=init_url,
        resumed_step=resumed_step,
        loader=loader,
        steps_per_epoch=steps_per_epoch,
        first_epoch=first_epoch,
        first_epoch_end=first_epoch_end,
        total_steps=total_steps,
        stop_step=min(total_steps, cfg.run.max_steps) if cfg.run.max_steps else total_steps,
    )


class Trainer:
    """One phase on one rank: ``__init__`` builds (device, process group, model, engine, resumed state, logger),
    ``train_step`` trains one optimiser step, ``fit`` runs the phase to its end and returns the summary."""

    def __init__(self, cfg: Config, world: World, plan: PhasePlan, *, hooks: TrainHooks, stop: StopRequest) -> None:
        self.cfg, self.world, self.plan, self.hooks, self.stop = cfg, world, plan, hooks, stop
        self.loader, self.storage = plan.loader, plan.storage
        self.config_yaml = to_yaml(cfg)
        if world.is_main:
            _announce_config(self.config_yaml, join_url(plan.phase_dir, "logs", "config.yaml"), plan.storage)
            # before any rank can upload (every rank waits for rank 0 in the engine's setup below)
            num_aborted = checkpoint.abort_unfinished_uploads(plan.phase_dir, plan.storage)
            if num_aborted:
                print(f"aborted {num_aborted} unfinished checkpoint upload(s) of a killed run", file=sys.stderr)

        self.device = choose_device(cfg.engine, world)
        seam.check_precision(cfg.engine, self.device)
        seam.set_determinism(cfg.engine.deterministic, self.device, cfg.engine.cudnn_benchmark)
        seam.warn_cpu_only_settings(cfg.engine, self.device)
        self.gpu = seam.gpu_path(cfg.engine, self.device, pin_memory=cfg.data.pin_memory)
        seam.apply_nccl_env(self.gpu["nccl_env"])
        seam.init_distributed(world, choose_backend(cfg.engine, self.device))
        seed_everything(cfg.data.seed)

        model = _build_model(cfg, plan.storage, resumed=plan.resume_url is not None, init_url=plan.init_url)
        trained = {id(p) for p in model.phase_parameters(plan.phase)}
        for p in model.parameters():
            p.requires_grad_(id(p) in trained)
        self.outputs = model.phase_outputs(plan.phase)
        model = seam.prepare_model(model, cfg.engine, self.device)
        self.optimizer = seam.make_optimizer(
            [p for p in model.parameters() if p.requires_grad], plan.phase_cfg.lr, cfg.optim.momentum,
            cfg.optim.weight_decay,
        )  # fmt: skip
        self.engine = seam.wrap(model, self.optimizer, cfg, world, self.device)

        self.step = 0
        if plan.resume_url is not None:
            state = checkpoint.load(
                self.engine, ckpt_url=plan.resume_url, model_cfg=cfg.model, world=world, storage=plan.storage
            )
            self.step = state.step  # the loader was resumed by plan_phase
            set_rng_state(state.rng_state)
        self.saved_step = self.step if plan.resume_url is not None else -1
        self.first_step = self.step

        self.logger = RunLogger(
            phase_dir_url=plan.phase_dir,
            world=world,
            storage=plan.storage,
            tensorboard=cfg.run.tensorboard,
            progress_bar=cfg.run.progress_bar,
            total_steps=plan.stop_step,
            initial_step=self.step,
            description=f"phase {plan.phase}",
            upload_every_s=cfg.run.log_upload_every_s,
        )
        self.samples_per_step = cfg.data.batch_size * cfg.optim.grad_accum_steps
        self.last: dict[str, float] = {}  # the newest logged loss terms and lr of this rank
        self.uploader = CheckpointUploader(
            phase_dir_url=plan.phase_dir, keep_last=cfg.run.keep_last, storage=plan.storage, is_main=world.is_main
        )
        self.commit_metrics: dict[str, float] = {}  # on_commit's metrics of the checkpoint in flight
        self.checkpoint_blocked_s: list[float] = []  # training time each checkpoint took (snapshot and waits)
        self.train_gflops_per_sample = 0.0
        if self.device.type == "cuda":  # for the logged TFLOP/s and MFU: ~3x the forward pass (forward + backward)
            from padnet_dist.model.cost import measure_model

            gflops = measure_model(cfg.model, cfg.data.crop_height, cfg.data.crop_width).gflops
            self.train_gflops_per_sample = 3 * gflops

    def train_step(self, batches: Iterator[dict[str, torch.Tensor]], epoch: int) -> None:
        """One optimiser step over ``optim.grad_accum_steps`` micro-batches of ``batches``; logs on log steps."""
        cfg, accum = self.cfg, self.cfg.optim.grad_accum_steps
        lr = lr_at(self.step, base_lr=self.plan.phase_cfg.lr, total_steps=self.plan.total_steps,
                   schedule=cfg.optim.schedule, warmup_steps=cfg.optim.warmup_steps,
                   poly_power=cfg.optim.poly_power)  # fmt: skip
        seam.set_lr(self.optimizer, lr)
        logging_step = (
            (self.step + 1) % cfg.run.log_every_steps == 0 or self.step + 1 == self.plan.stop_step
            or cfg.data.log_sample_keys
        )  # fmt: skip
        data_wait_s = compute_s = comm_s = 0.0
        terms: dict[str, torch.Tensor] = {}
        sample_keys: list[str] = []
        for _ in range(accum):
            t0 = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                raise UserError(f"the loader ended epoch {epoch} early: its len() ({len(self.loader)}) is wrong")
            t1 = time.perf_counter()
            if cfg.data.log_sample_keys:
                sample_keys += [k for k, valid in zip(batch["keys"], batch["valid"].tolist()) if valid]
            rgb = batch["rgb"].to(self.device, non_blocking=True)  # non-blocking from pinned memory (cuda)
            if self.gpu["channels_last"]:
                rgb = rgb.contiguous(memory_format=torch.channels_last)
            targets = {k: batch[k].to(self.device, non_blocking=True) for k in TARGETS if k in batch}
            with seam.autocast(cfg.engine, self.device):
                predictions = self.engine(rgb, outputs=self.outputs)
            predictions = {k: v.float() for k, v in predictions.items()}
            losses = compute_losses(predictions, targets, cfg.loss, cfg.data.ignore_index)
            # backward() all-reduces gradients across ranks (a sync point) on the last micro-batch of a step;
            # step() updates only then.
            self.engine.backward(losses["total"])
            comm_s += seam.comm_seconds(self.engine) or 0.0
            self.engine.step()
            terms = {k: terms.get(k, 0.0) + v.detach() / accum for k, v in losses.items()}
            if logging_step and self.device.type == "cuda":
                torch.cuda.synchronize()  # GPU kernels run asynchronously: wait so compute_s is the real time
            data_wait_s += t1 - t0
            compute_s += time.perf_counter() - t1
        self.step += 1

        if logging_step:
            self.last = {k: float(v) for k, v in terms.items()}  # float() of a GPU tensor syncs; log steps only
            self.logger.log(
                {
                    "step": self.step,
                    "epoch": epoch,
                    **self.last,
                    "lr": lr,
                    "samples_per_s": self.samples_per_step / max(data_wait_s + compute_s, 1e-9),
                    "data_wait_s": data_wait_s,
                    "compute_s": compute_s,
                    "data_wait_share": data_wait_s / max(data_wait_s + compute_s, 1e-9),
                    "num_corrupt_skipped": self.loader.stats.num_corrupt_skipped,
                    "time": time.time(),
                    **({"comm_s": comm_s} if cfg.engine.comm_timing else {}),
                    **self._device_figures(data_wait_s + compute_s),
                    **({"samples": sample_keys} if cfg.data.log_sample_keys else {}),
                }
            )
        self.logger.advance()

    def _device_figures(self, step_s: float) -> dict[str, float]:
        """GPU only: peak memory since the last log step, the model's TFLOP/s and, given the device's peak, MFU."""
        if self.device.type != "cuda":
            return {}
        out = {"max_memory_gb": torch.cuda.max_memory_allocated(self.device) / 1e9}
        torch.cuda.reset_peak_memory_stats(self.device)
        tflops = self.train_gflops_per_sample * self.samples_per_step / max(step_s, 1e-9) / 1e3
        out["model_tflops_per_s"] = tflops
        if self.cfg.engine.peak_tflops > 0:
            out["mfu"] = tflops / self.cfg.engine.peak_tflops
        return out

    def fit(self) -> dict[str, Any]:
        """Train until the phase's stop step or an agreed stop; commit the final checkpoint; return the summary."""
        plan, stop, every = self.plan, self.stop, self.cfg.run.checkpoint_every_steps
        started = time.perf_counter()
        self.engine.train()
        while self.step < plan.stop_step and not stop.agreed:
            epoch = plan.epoch_at(self.step)
            self.loader.set_epoch(epoch)  # a no-op mid-epoch: a resumed loader yields the rest of its restored epoch
            batches = iter(self.loader)
            while self.step < plan.stop_step and plan.epoch_at(self.step) == epoch and not stop.agreed:
                self.train_step(batches, epoch)
                if every and self.step % every == 0:
                    self.save_checkpoint()
                # A sync point: all ranks must stop after the same step, or the others would wait in the next
                # all-reduce; a signal seen by any rank stops every rank.
                # should_stop() first: it may be a collective, so no rank may skip it by short-circuiting.
                stop.agreed = any_rank(self.hooks.should_stop() or stop.requested)

            epochs_done = plan.epoch_at(self.step)
            if epochs_done > epoch and _eval_due(self.cfg, epochs_done, plan.phase_cfg.epochs):
                self.evaluate()
                # a signal or a launcher's stop during evaluation stops before the next epoch; an agreement already
                # reached stays (it is the same on every rank, so should_stop() is still called everywhere)
                stop.agreed = any_rank(self.hooks.should_stop() or stop.requested or stop.agreed)

        final_url = checkpoint.checkpoint_url(plan.phase_dir, self.step)
        if self.step != self.saved_step:
            final_url = self.save_checkpoint()
        # The phase's last checkpoint (also the one a stop commits) is committed before any rank returns.
        self.finish_upload(final=True)
        self.uploader.close()
        self.logger.close(self.storage)
        self.loader.close()
        # Sync point: no rank returns (and exits) before rank 0 has written COMMITTED; srun --kill-on-bad-exit
        # would otherwise stop rank 0 mid-commit as soon as another rank exited 75.
        barrier()
        stop.restore()
        elapsed_s = time.perf_counter() - started
        samples = (self.step - self.first_step) * self.samples_per_step * self.world.world_size
        return plan.summary(
            self.world,
            step=self.step,
            checkpoint_url=final_url,
            stopped_by_signal=stop.agreed,
            initialised_from=plan.init_url,
            losses=self.last,
            samples_per_s=samples / max(elapsed_s, 1e-9),
            checkpoint_blocked_s=self.checkpoint_blocked_s,
        )

    def save_checkpoint(self) -> str:
        """Snapshot this step (a collective) and publish it in the background; returns its URL.

        Waits first for the checkpoint still in flight, if any (at most one is), and says so. With
        ``run.async_checkpoints=false`` the checkpoint is committed before this returns.
        """
        started = time.perf_counter()
        if self.uploader.in_flight_step is not None:
            if self.uploader.busy and self.world.is_main:
                print(f"checkpoint step {self.step} waits for the upload of step {self.uploader.in_flight_step}",
                      file=sys.stderr, flush=True)  # fmt: skip
            self.finish_upload(final=False)
        url = checkpoint.checkpoint_url(self.plan.phase_dir, self.step)
        state = checkpoint.TrainerState(
            step=self.step,
            epoch=self.plan.epoch_at(self.step),
            loader_state=self.loader.state_dict(),
            rng_state=rng_state(),
        )
        snap = checkpoint.take_snapshot(
            self.engine,
            state,
            ckpt_url=url,
            phase=self.plan.phase,
            config_yaml=self.config_yaml,
            world=self.world,
            storage=self.storage,
            extra_uploads=self.logger.uploads(),
            reuse=self.uploader.published,
        )
        self.uploader.submit(snap)
        self.commit_metrics = {"step": float(self.step), **self.last}
        self.saved_step = self.step
        if not self.cfg.run.async_checkpoints:
            self.finish_upload(final=False)
        self.checkpoint_blocked_s.append(time.perf_counter() - started)
        return url

    def finish_upload(self, *, final: bool) -> None:
        """Wait for the checkpoint in flight; tell the hooks of its commit (on every rank: ``on_commit`` may be a
        collective, so it runs here, at the same point on every rank, not in the upload thread). A checkpoint that
        was not committed is reported by the uploader; when it is the phase's ``final`` one, this raises."""
        outcome = self.uploader.wait()
        if outcome is None:
            return
        if outcome.committed:
            self.hooks.on_commit(outcome.url, outcome.step, self.commit_metrics)
        elif final:
            raise StorageError(
                f"the final checkpoint {outcome.url} was not committed ({outcome.error}): fix the storage and "
                "run again (run.resume=auto continues from the newest committed checkpoint)"
            )

    def evaluate(self) -> None:
        _evaluate(self.engine, self.cfg, self.world, self.device, self.logger, self.step)


def _accumulation_for(cfg: Config, resume_url: str, world: World, storage) -> tuple[Config, str]:
    """``cfg`` with the gradient accumulation a resume on another world size runs with (``run.on_resize``), and
    the line that says so ("" when the world size is the saved one).

    ``keep_global_batch`` (default): ``optim.grad_accum_steps`` so that batch x accumulation x ranks equals the
    checkpoint's global batch, so every optimiser step sees as many samples as before and the learning rate,
    momentum and the schedule's length in steps stay what they were tuned for. ``keep_grad_accum``: the configured
    accumulation; the global batch changes.
    """
    saved_ranks = checkpoint.saved_world_size(resume_url, storage)
    if saved_ranks == world.world_size:
        return cfg, ""
    saved = checkpoint.read_config(resume_url, storage)
    saved_global = saved.data.batch_size * saved.optim.grad_accum_steps * saved_ranks
    per_step = cfg.data.batch_size * world.world_size
    accum = cfg.optim.grad_accum_steps
    if cfg.run.on_resize == "keep_global_batch":
        if saved_global % per_step:
            raise UserError(
                f"run.on_resize=keep_global_batch: the checkpoint's global batch of {saved_global} samples is not "
                f"data.batch_size={cfg.data.batch_size} x {world.world_size} ranks x an accumulation: choose a "
                f"data.batch_size that divides {saved_global // math.gcd(saved_global, world.world_size)}, or set "
                "run.on_resize=keep_grad_accum to change the global batch"
            )
        accum = saved_global // per_step
    message = (
        f"resuming {resume_url} of {saved_ranks} ranks on {world.world_size}: global batch {saved_global} -> "
        f"{per_step * accum} samples (data.batch_size={cfg.data.batch_size} x optim.grad_accum_steps={accum} x "
        f"{world.world_size} ranks, run.on_resize={cfg.run.on_resize})"
    )
    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, grad_accum_steps=accum)), message


def _announce_config(config_yaml: str, url: str, storage) -> None:
    """Print the resolved config (rank 0, stderr: stdout carries the summary) and save it beside the logs."""
    print(f"resolved config (saved to {url}):\n{config_yaml}", file=sys.stderr, flush=True)
    storage.write_bytes(url, config_yaml.encode())  # atomic


def _build_model(cfg: Config, storage, *, resumed: bool, init_url: str | None) -> torch.nn.Module:
    """The bare network: ImageNet backbone for a fresh phase 1, phase 1's trained weights over this run's own
    initialisation for a fresh phase 2 (``train.phase_init``).

    A resumed phase gets its weights from the engine state instead, so nothing is loaded here.
    """
    from padnet_dist.model import build_model

    if not resumed and cfg.phase == 1:
        from padnet_dist.train.pretrained import build_model_from_config

        return build_model_from_config(cfg.model, cfg.storage)
    model = build_model(cfg.model)
    if init_url is not None:
        load_phase1_state(model, checkpoint.read_model_state(init_url, storage), init_url)
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
