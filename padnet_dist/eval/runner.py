"""Distributed evaluation: every rank scores its share of the split; the sums are added across ranks.

Each metric is an accumulator of sums (``state()`` is a tensor of integer counts and per-sample float64 sums), so adding
the states of all ranks gives the numbers one process would compute over the whole split, up to float64 rounding,
whatever the world size (see ``evaluate`` for when the per-sample predictions are themselves identical). Padding samples
(``valid`` False, added so every rank runs the same number of batches) are never counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from padnet_dist.collectives import sum_over_ranks
from padnet_dist.errors import UserError
from padnet_dist.world import World

DEPTH_NOTE = "pooled over all valid pixels of the split"
CITYSCAPES_TRAIN_ID_NOTE = (
    "ground-truth label ids were rebuilt from train ids (the shards hold no instance/label-id image), so classes "
    "outside the 19 train ids and instance weights are lost: official numbers need 'padnet-dist eval-cityscapes' "
    "on the raw gtFine ground truth"
)
CITYSCAPES_RESOLUTION_NOTE = (
    "some frames were evaluated below the official 2048x1024: iIoU weights assume full-resolution instance sizes, "
    "so official numbers need 'padnet-dist eval-cityscapes' on the raw gtFine ground truth"
)
CITYSCAPES_SIZE = (1024, 2048)  # (H, W) of the official ground truth


def _pick(outputs: dict[str, torch.Tensor], *names: str) -> torch.Tensor | None:
    for name in names:
        if name in outputs:
            return outputs[name]
    return None


def _to_size(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, C, h, w) predictions to the target's (H, W); a no-op at full resolution."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False)


class _Scores:
    """The accumulators of one evaluation, created from the first batch's model outputs."""

    def __init__(
        self,
        outputs: dict[str, torch.Tensor],
        *,
        num_classes: int,
        ignore_index: int,
        dataset: str,
        depth_min_m: float,
        depth_cap_m: float | None,
        depth_target: str,
        depth_in_metres: bool,
    ) -> None:
        from padnet_dist.eval import metrics as M

        self.ignore_index = ignore_index
        self.depth_min_m, self.depth_cap_m = depth_min_m, depth_cap_m
        self.depth_target, self.depth_in_metres = depth_target, depth_in_metres
        self.accumulators: dict[str, Any] = {}
        if _pick(outputs, "final_depth", "inter_depth") is not None:
            self.accumulators["depth"] = M.DepthMetrics()  # the range is applied in metres by _depth_pair
        if _pick(outputs, "final_semantic", "inter_semantic") is not None:
            self.accumulators["semantic"] = M.ConfusionMetrics(num_classes=num_classes, ignore_index=ignore_index)
            if dataset == "cityscapes":
                from padnet_dist.eval.cityscapes import CityscapesEvaluator

                self.accumulators["cityscapes"] = CityscapesEvaluator()
        if "inter_normals" in outputs:
            self.accumulators["normals"] = M.NormalsMetrics()
        if "inter_contour" in outputs:
            self.accumulators["contour"] = M.ContourMetrics(ignore_index=ignore_index)
        # Counts, summed over ranks like the metric states: samples scored, Cityscapes frames whose label ids were
        # rebuilt from train ids, and frames not at the official resolution.
        self.num_samples = 0
        self.num_rebuilt_labels = 0
        self.num_off_size = 0

    def update(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any], keep: torch.Tensor) -> None:
        """Score the samples ``keep`` (index tensor) of one batch; predictions are resized to the targets."""
        size = tuple(batch["semantic"].shape[-2:])
        self.num_samples += int(keep.numel())
        if "depth" in self.accumulators:
            pred = _to_size(_pick(outputs, "final_depth", "inter_depth")[keep], size)
            self.accumulators["depth"].update(*self._depth_pair(pred, batch, keep))
        if "semantic" in self.accumulators:
            logits = _to_size(_pick(outputs, "final_semantic", "inter_semantic")[keep], size)
            pred_ids = logits.argmax(dim=1)
            gt_ids = batch["semantic"][keep]
            try:
                self.accumulators["semantic"].update(pred_ids, gt_ids)
            except ValueError as e:
                raise UserError(
                    f"{e}: the split's classes do not match model.num_classes; use the matching checkpoint"
                ) from None
            if "cityscapes" in self.accumulators:
                if size != CITYSCAPES_SIZE:
                    self.num_off_size += int(keep.numel())
                self._update_cityscapes(pred_ids, gt_ids, batch.get("instances"), keep)
        if "normals" in self.accumulators and "normals" in batch:
            normals = F.normalize(_to_size(outputs["inter_normals"][keep], size), dim=1)
            self.accumulators["normals"].update(normals, batch["normals"][keep])
        if "contour" in self.accumulators and "contour" in batch:
            prob = torch.sigmoid(_to_size(outputs["inter_contour"][keep], size))
            self.accumulators["contour"].update(prob, batch["contour"][keep])

    def _depth_pair(
        self, pred: torch.Tensor, batch: dict[str, Any], keep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction, ground truth) to score, in the target's unit or metres; ground truth outside the metric
        range (depth_min_m, depth_cap_m) is set to 0 (invalid) whatever the target."""
        from padnet_dist.data.targets import target_to_depth

        gt = batch["depth"][keep]
        if not (self.depth_in_metres or self.depth_min_m > 0 or self.depth_cap_m is not None):
            return pred, gt  # nothing is read in metres
        camera = {k: v[keep] for k, v in (batch.get("camera") or {}).items()}
        if self.depth_target == "disparity" and "baseline" not in camera:
            raise UserError(
                "a metric depth range or --depth-metres on a disparity model needs each sample's stereo baseline and "
                "fx: evaluate on Cityscapes shards"
            )

        def metres(x: torch.Tensor) -> torch.Tensor:
            return target_to_depth(x, self.depth_target, baseline_m=camera.get("baseline"), fx=camera.get("fx"))

        gt_m = metres(gt)
        in_range = gt_m > self.depth_min_m
        if self.depth_cap_m is not None:
            in_range &= gt_m < self.depth_cap_m
        if self.depth_in_metres:
            return metres(pred), torch.where(in_range, gt_m, torch.zeros_like(gt_m))
        return pred, torch.where(in_range, gt, torch.zeros_like(gt))

    def _update_cityscapes(
        self,
        pred_train_ids: torch.Tensor,
        gt_train_ids: torch.Tensor,
        instances: torch.Tensor | None,
        keep: torch.Tensor,
    ) -> None:
        from padnet_dist.data.cityscapes_labels import train_ids_to_label_ids

        pred_np = train_ids_to_label_ids(pred_train_ids.cpu().numpy().astype(np.uint8))
        gt_train_np = gt_train_ids.cpu().numpy()
        inst_np = None if instances is None else instances[keep].cpu().numpy().astype(np.int64)
        for i in range(pred_np.shape[0]):
            gt_labels, gt_instances = gt_label_ids(gt_train_np[i], None if inst_np is None else inst_np[i])
            if gt_instances is None:
                self.num_rebuilt_labels += 1
                gt_instances = np.zeros_like(gt_labels, dtype=np.int64)
            self.accumulators["cityscapes"].update(pred_np[i], gt_labels, gt_instances)

    def reduce(self, world: World) -> None:
        for acc in self.accumulators.values():
            acc.load_state(sum_over_ranks(acc.state()))
        counts = torch.tensor([self.num_samples, self.num_rebuilt_labels, self.num_off_size], dtype=torch.int64)
        self.num_samples, self.num_rebuilt_labels, self.num_off_size = sum_over_ranks(counts).tolist()

    def compute(self, *, dataset: str, class_names: Sequence[str] | None) -> dict[str, Any]:
        result: dict[str, Any] = {"dataset": dataset, "num_samples": self.num_samples}
        for name, acc in self.accumulators.items():
            result[name] = dict(acc.compute())
        if "depth" in result:
            from padnet_dist.data.targets import DEPTH_TARGET_UNITS

            result["depth"]["note"] = DEPTH_NOTE
            result["depth"]["target"] = self.depth_target
            result["depth"]["unit"] = "m" if self.depth_in_metres else DEPTH_TARGET_UNITS[self.depth_target]
            if self.depth_in_metres and self.depth_target != "depth":
                result["depth"]["converted_from"] = self.depth_target
        if "semantic" in result and class_names is not None:
            for key in ("iou", "acc"):
                values = result["semantic"].get(key)
                if isinstance(values, (list, tuple)) and len(values) == len(class_names):
                    result["semantic"][key] = dict(zip(class_names, values))
        if "cityscapes" in result:
            notes = []
            if self.num_rebuilt_labels:
                notes.append(CITYSCAPES_TRAIN_ID_NOTE)
                # without instance ids every instance weight is missing: an iIoU of 0 would be a made-up number
                section = result["cityscapes"]
                section["iiou_class"] = section["iiou_category"] = math.nan
                for key in ("class_iiou", "category_iiou"):
                    section[key] = dict.fromkeys(section.get(key, {}), math.nan)
            if self.num_off_size:
                notes.append(CITYSCAPES_RESOLUTION_NOTE)
            result["cityscapes"]["official"] = not notes
            if notes:
                result["cityscapes"]["note"] = "; ".join(notes)
        return result


def gt_label_ids(gt_train_ids: np.ndarray, instances: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Cityscapes ground truth for the official metric from one evaluation sample.

    ``instances`` (H, W) int64 is the content of ``*_gtFine_instanceIds.png`` (label_id * 1000 + k for instance
    classes, the plain label id elsewhere) or -1 where the shards hold none. When it covers every pixel it gives the
    exact label ids (values outside 0..33, e.g. a wrapped license plate id, become 0 'unlabeled', which is not
    evaluated); otherwise label ids are rebuilt from the train ids (ignore -> 0) and None is returned for the
    instances. Returns (label ids int64 (H, W), instance ids int64 (H, W) | None).
    """
    from padnet_dist.data.cityscapes_labels import NUM_LABEL_IDS, train_ids_to_label_ids

    if instances is not None and instances.shape == gt_train_ids.shape and (instances >= 0).all():
        instances = instances.astype(np.int64)
        label_ids = np.where(instances >= 1000, instances // 1000, instances)
        unknown = label_ids >= NUM_LABEL_IDS
        return np.where(unknown, 0, label_ids), np.where(unknown, 0, instances)
    return train_ids_to_label_ids(np.asarray(gt_train_ids, dtype=np.int64).clip(0, 255)).astype(np.int64), None


def evaluate(
    model: torch.nn.Module,
    loader: Iterable[dict[str, Any]],
    *,
    num_classes: int,
    dataset: str,
    world: World,
    ignore_index: int = 255,
    device: str | torch.device = "cpu",
    reduce: bool = True,
    depth_cap_m: float | None = None,
    depth_min_m: float = 0.0,
    depth_target: str = "depth",
    depth_in_metres: bool = False,
    class_names: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Score ``model`` on every valid sample ``loader`` yields on this rank, summed over all ranks.

    ``outputs`` restricts what the model computes and what is scored (phase 1 passes its own outputs, so the
    untrained decoders are not scored); None scores every output the model has.

    loader: evaluation batches (see docs/contracts.md): rgb (B, 3, H, W) normalised, semantic (B, H, W) int64,
    depth (B, 1, H, W) in ``depth_target``'s unit (0 invalid), normals (B, 3, H, W), contour (B, 1, H, W), valid (B,)
    bool, instances (B, H, W) int64 (-1 none), camera {fx, baseline, ...: (B,)} (needed for disparity). Every rank
    must yield the same number of batches.
    Final outputs are scored (intermediate ones when the variant has no final head for a task), after bilinear
    resizing to the target's full resolution. ``depth_target`` (depth | disparity | inverse_depth) is what the
    model's depth head predicts and the batches hold; depth errors are computed in its unit, or in metres with
    ``depth_in_metres`` (prediction and ground truth converted with each sample's camera). Depth is scored where the
    ground truth in metres satisfies depth_min_m < gt (and gt < depth_cap_m when given; NYUD convention:
    1e-3 < gt < 10 m), whatever the unit scored.
    With ``reduce`` (default) the states are all-reduced when a process group is initialised and
    ``world.world_size > 1``; every rank returns the same dict:
    ``{"dataset", "num_samples", "depth": {rel, rms, log10, delta1..3, num_pixels, note, target, unit,
    converted_from?}, "semantic": {miou,
    mean_acc, pixel_acc, iou, acc, num_pixels}, "normals"?, "contour"?, "cityscapes"?}``.
    The metric layer is independent of the world size and of ``eval_batch_size`` up to float64 rounding (about
    1e-15 relative), given the same per-sample predictions: every float sum is formed per sample in float64 and
    counts are integers (``eval.metrics``). The predictions themselves are fp32 network outputs, and CPU kernels
    round them differently with the number of threads and the samples batched together (measured on the tiny model:
    up to about 6e-6 absolute in depth), so two runs give bitwise the same predictions, and metrics equal to 1e-12,
    when every rank runs the same number of threads (``OMP_NUM_THREADS``; ``--nproc N`` gives each rank
    cpu_count // N unless it is set) and ``eval_batch_size`` is 1 (the default). Otherwise they differ by about the
    fp32 rounding of the outputs (around 1e-6 relative).
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    scores: _Scores | None = None
    try:
        with torch.no_grad():
            for batch in loader:
                predictions = model(batch["rgb"].to(device, non_blocking=True), outputs=outputs)
                predictions = {k: v.detach().to("cpu", torch.float32) for k, v in predictions.items()}
                if scores is None:
                    scores = _Scores(
                        predictions,
                        num_classes=num_classes,
                        ignore_index=ignore_index,
                        dataset=dataset,
                        depth_min_m=depth_min_m,
                        depth_cap_m=depth_cap_m,
                        depth_target=depth_target,
                        depth_in_metres=depth_in_metres,
                    )
                valid = batch.get("valid")
                keep = (
                    torch.arange(batch["rgb"].shape[0])
                    if valid is None
                    else torch.nonzero(torch.as_tensor(valid, dtype=torch.bool).cpu(), as_tuple=False).flatten()
                )
                if keep.numel():
                    scores.update(predictions, batch, keep)
    finally:
        model.train(was_training)
    if scores is None:
        raise UserError("the evaluation split yielded no batches on this rank: check data.val_manifest and its shards")
    if reduce:
        scores.reduce(world)
    return scores.compute(dataset=dataset, class_names=class_names)
