"""The six loss terms of PAD-Net (paper §3.6) and their weighted sum, L_all = sum_i w_i L_i.

Loss types: Euclidean for depth and normals, softmax cross-entropy for scene parsing, binary cross-entropy for contours
(plain, as the paper's "cross-entropy loss"; class-balanced with ``loss.contour_pos_balance=true``). Every term is a
mean over the pixels that carry a target, so padding samples (`batch["valid"] == False`), invalid depth (0, which
includes ground truth outside the data's valid range), invalid normals (zero vector), ignore labels (255) and ignored
contour pixels (255) contribute neither loss nor gradient. Depth is in ``data.depth_target``'s unit (metres, disparity
pixels or 1/m); the loss is the same Euclidean loss on whichever it is. A batch without any such pixel gives a 0 that is
still attached to the graph (never NaN), so every rank can run backward.

Intermediate outputs are at 1/4 resolution; targets are brought to each output's resolution here, sampled where
the output's pixels are: the model makes its 1/4 maps by bilinear resizing (align_corners=False), and evaluation and
the decoders read them the same way, so output pixel i stands for full-resolution coordinate (i + 0.5) * H / h - 0.5,
the centre of its 4x4 cell (4i + 1.5), not its top-left pixel 4i (a 1.5-pixel shift at full resolution).
  depth, normals: bilinear at the cell centre (the mean of the central 2x2 pixels at exactly 1/4) where every pixel
    it reads is valid, else the nearest pixel to the centre (so an invalid target stays invalid and invalid zeros
    never blend into valid values); normals are renormalised after averaging;
  semantic: the nearest pixel to the centre (torch 'nearest-exact': pixel 4i + 2 at 1/4; a label cannot be
    interpolated, so half a pixel remains), no label is invented;
  contours: a cell is 1 if any full-resolution pixel inside it is 1 (adaptive max-pool over the cell, which is
    centred on the output pixel; thin boundaries survive), else 0 if any pixel in it is valid, else 255.
The resizes live in ``data.targets``; the training loader makes normals and contours directly on the 1/4 grid
(``normals_at_size``, ``contours_at_size``, bitwise equal to these resizes), so here they pass through unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from padnet_dist.config.optim import LossConfig
from padnet_dist.data.targets import CONTOUR_IGNORE, resize_contour, resize_nearest, resize_normals, resize_valid

DEPTH_OUTPUTS = ("inter_depth", "final_depth")
NORMAL_OUTPUTS = ("inter_normals",)
SEMANTIC_OUTPUTS = ("inter_semantic", "final_semantic")
CONTOUR_OUTPUTS = ("inter_contour",)
LOSS_NAMES = ("inter_depth", "inter_normals", "inter_semantic", "inter_contour", "final_depth", "final_semantic")


def _sample_mask(batch: dict, batch_size: int, device: torch.device) -> torch.Tensor:
    valid = batch.get("valid")
    if valid is None:
        return torch.ones(batch_size, dtype=torch.bool, device=device)
    return torch.as_tensor(valid, dtype=torch.bool, device=device).reshape(batch_size)


def _masked_mean(per_pixel: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of per_pixel over mask; where() keeps NaN/inf at masked pixels out of the value and the gradient."""
    total = torch.where(mask, per_pixel, torch.zeros_like(per_pixel)).sum()
    return total / mask.sum().clamp_min(1).to(per_pixel.dtype)


def euclidean_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked pixels of the squared Euclidean distance ||pred - target||^2 over channels.

    pred, target (B, K, H, W); mask (B, 1, H, W) bool. Caffe's EuclideanLoss also halves and divides by the
    batch size; the constant is absorbed by the loss weights.
    """
    diff = torch.where(mask, pred - target, torch.zeros_like(pred))
    return _masked_mean(diff.pow(2).sum(dim=1, keepdim=True), mask)


def depth_loss(pred: torch.Tensor, depth: torch.Tensor, sample_mask: torch.Tensor) -> torch.Tensor:
    """pred (B, 1, h, w); depth (B, 1, H, W) in the same unit (data.depth_target: m, px or 1/m), 0 = invalid."""
    depth = depth.to(pred.dtype)
    target = resize_valid(depth, (depth > 0) & torch.isfinite(depth), tuple(pred.shape[-2:]))
    mask = (target > 0) & torch.isfinite(target) & sample_mask.view(-1, 1, 1, 1)
    return euclidean_loss(pred, torch.where(mask, target, torch.zeros_like(target)), mask)


def normals_loss(pred: torch.Tensor, normals: torch.Tensor, sample_mask: torch.Tensor) -> torch.Tensor:
    """pred (B, 3, h, w); normals (B, 3, H, W) unit vectors, zero vector = invalid. The prediction is not normalised."""
    target = resize_normals(normals.to(pred.dtype), tuple(pred.shape[-2:]))
    mask = (target.abs().sum(dim=1, keepdim=True) > 0) & sample_mask.view(-1, 1, 1, 1)
    return euclidean_loss(pred, target, mask)


def semantic_loss(
    logits: torch.Tensor, semantic: torch.Tensor, sample_mask: torch.Tensor, ignore_index: int
) -> torch.Tensor:
    """Softmax cross-entropy averaged over non-ignored pixels. logits (B, C, h, w); semantic (B, H, W) int64."""
    target = resize_nearest(semantic.unsqueeze(1).to(torch.float32), tuple(logits.shape[-2:])).squeeze(1).long()
    target = torch.where(sample_mask.view(-1, 1, 1), target, torch.full_like(target, ignore_index))
    num_valid = (target != ignore_index).sum()
    total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    return total / num_valid.clamp_min(1).to(total.dtype)


def contour_loss(
    logits: torch.Tensor, contour: torch.Tensor, sample_mask: torch.Tensor, pos_balance: bool
) -> torch.Tensor:
    """Binary cross-entropy with logits averaged over non-ignored pixels.

    logits (B, 1, h, w); contour (B, 1, H, W) float 1/0/255. With pos_balance, positive pixels are weighted by
    num_negative / num_positive counted over the valid pixels of this batch (a constant, no gradient), so both
    classes carry equal total weight as in HED-style edge losses.
    """
    target = resize_contour(contour.to(logits.dtype), tuple(logits.shape[-2:]))
    mask = (target != CONTOUR_IGNORE) & sample_mask.view(-1, 1, 1, 1)
    positive = (target == 1) & mask
    binary = positive.to(logits.dtype)
    per_pixel = F.binary_cross_entropy_with_logits(logits, binary, reduction="none")
    if pos_balance:
        num_pos = positive.sum()
        num_neg = mask.sum() - num_pos
        ratio = num_neg.to(logits.dtype) / num_pos.clamp_min(1).to(logits.dtype)  # unused when num_pos == 0
        per_pixel = per_pixel * torch.where(positive, ratio, torch.ones_like(ratio))
    return _masked_mean(per_pixel, mask)


def compute_losses(
    outputs: dict[str, torch.Tensor], batch: dict, weights: LossConfig, ignore_index: int = 255
) -> dict[str, torch.Tensor]:
    """One scalar loss per model output present (same names) plus `total` = sum of weights.<name> * loss.

    outputs: any subset of the six model outputs (phase 1 passes only `inter_semantic`).
    batch: the training batch of docs/contracts.md; only the targets the present outputs need are read
    (`depth`, `normals`, `semantic`, `contour`) plus `valid` (B,) bool (absent = every sample is real).
    """
    unknown = sorted(set(outputs) - set(LOSS_NAMES))
    if unknown:
        raise ValueError(f"no loss for model outputs {unknown}: known outputs are {', '.join(LOSS_NAMES)}")
    if not outputs:
        raise ValueError("compute_losses needs at least one model output")
    first = next(iter(outputs.values()))
    sample_mask = _sample_mask(batch, first.shape[0], first.device)

    def target(key: str) -> torch.Tensor:
        if key not in batch:
            raise KeyError(f"batch has no '{key}' target, needed by the model outputs {sorted(outputs)}")
        return torch.as_tensor(batch[key], device=first.device)

    losses: dict[str, torch.Tensor] = {}
    for name in LOSS_NAMES:
        if name not in outputs:
            continue
        pred = outputs[name]
        if name in DEPTH_OUTPUTS:
            losses[name] = depth_loss(pred, target("depth"), sample_mask)
        elif name in NORMAL_OUTPUTS:
            losses[name] = normals_loss(pred, target("normals"), sample_mask)
        elif name in SEMANTIC_OUTPUTS:
            losses[name] = semantic_loss(pred, target("semantic"), sample_mask, ignore_index)
        else:
            losses[name] = contour_loss(pred, target("contour"), sample_mask, weights.contour_pos_balance)
    # The one place the weighted sum is formed (STYLE practice 6).
    losses["total"] = sum(getattr(weights, name) * loss for name, loss in losses.items())
    return losses
