"""Evaluation metrics as accumulators of sums.

Each accumulator keeps its whole state in one flat tensor of sums and counts (`state()`), so a distributed runner
all-reduces (sums) the states of its ranks and `load_state`s the result: the metrics of the split then equal those one
process computes over all samples, however the samples are split over ranks and batches. Counts are integers (exact).
Float sums are formed per sample in float64 from that sample alone (never across the samples of a batch) and added
sample by sample, so between world sizes and batch sizes only float64 rounding differs (the order of adding per-sample
values, and how a thread pool splits one sample's sum): the results agree to about 1e-15 relative (1e-12 is tested over
simulated worlds of 1..8 ranks and batch sizes 1, 3 and 5), given the same per-sample predictions. `merge(other)` does
the same in one process. Inputs may live on any device; the state stays on CPU unless `device` is given.

Every `update` takes an optional `valid` (B,) bool: samples with False (padding) are not counted.

Why our own accumulator and not `torchmetrics` (issue 12, decided by what each needs, not measured): what torchmetrics
would give is the `Metric` base (state registration, `dist_reduce_fx="sum"` sync), which is the 40 lines of
`Accumulator` here. Its ready metrics do not serve: none computes the official Cityscapes iIoU (instance-size
weighted, with the evaluator's vehicle/void false-positive rules that tests/eval/test_cityscapes_eval.py checks
against cityscapesScripts) or the Eigen depth errors pooled over the valid pixels of the split inside the Eigen crop;
its regression metrics keep one running sum per state in torch's default float32 (unless `set_dtype` is called),
added per batch, so the result would depend on batch and world size at about 1e-7 relative, not the 1e-12 above. Custom
torchmetrics subclasses would have to re-implement every formula here anyway, and torchmetrics is not installed
(it would be a new dependency for no removed code of substance).
"""

from __future__ import annotations

import math

import torch

NYUD_EIGEN_CROP = (45, 471, 41, 601)  # rows [45, 471), cols [41, 601) at 480x640 (Eigen et al. 2014)
NYUD_EIGEN_CROP_SIZE = (480, 640)


class Accumulator:
    """A flat state tensor plus the operations a distributed runner needs."""

    _state: torch.Tensor

    def state(self) -> torch.Tensor:
        """A copy of the flat state; summing the states of several accumulators merges them."""
        return self._state.clone()

    def load_state(self, state: torch.Tensor) -> None:
        state = torch.as_tensor(state)
        if state.shape != self._state.shape:
            raise ValueError(
                f"{type(self).__name__} state must have shape {tuple(self._state.shape)}, got {tuple(state.shape)}"
            )
        self._state = state.to(self._state.device, self._state.dtype).clone()

    def merge(self, other: Accumulator) -> None:
        if type(other) is not type(self) or other._state.shape != self._state.shape:
            raise ValueError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        self._state += other._state.to(self._state.device)

    def reset(self) -> None:
        self._state.zero_()

    def _add_per_sample(self, rows: torch.Tensor, offset: int = 0) -> None:
        """Add (B, K) float64 per-sample sums into state[offset : offset + K], one sample at a time."""
        rows = rows.to(self._state.device, torch.float64)
        for row in rows:
            self._state[offset : offset + row.numel()] += row


def _sample_mask(valid: torch.Tensor | None, batch_size: int, device: torch.device) -> torch.Tensor:
    if valid is None:
        return torch.ones(batch_size, dtype=torch.bool, device=device)
    return torch.as_tensor(valid, dtype=torch.bool, device=device).reshape(batch_size)


def _as_b1hw(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(1) if x.dim() == 3 else x


class DepthMetrics(Accumulator):
    """Depth errors of Eigen et al. / paper §4.1, pooled over all valid pixels of the split (not per image).

    valid pixel: gt > min_depth_m (strict), gt < max_depth_m if given (NYUD convention: 1e-3 < gt < 10), inside
    the Eigen crop if eigen_crop (rows 45:471, cols 41:601 of 480x640, scaled proportionally for other sizes).
    Predictions are clamped to >= pred_min_m before the ratio and the log, so a zero/negative prediction gives a
    large but finite error instead of inf/NaN.
    rel = mean |d - d*| / d*, rms = sqrt(mean (d - d*)^2), log10 = mean |log10 d - log10 d*|,
    deltaK = share of pixels with max(d / d*, d* / d) < 1.25^K (strict).
    """

    _FIELDS = ("num_pixels", "sum_abs_rel", "sum_sq", "sum_abs_log10", "num_delta1", "num_delta2", "num_delta3")

    def __init__(
        self,
        *,
        min_depth_m: float = 0.0,
        max_depth_m: float | None = None,
        eigen_crop: bool = False,
        pred_min_m: float = 1e-3,
        device: torch.device | str = "cpu",
    ) -> None:
        self.min_depth_m = min_depth_m
        self.max_depth_m = max_depth_m
        self.eigen_crop = eigen_crop
        self.pred_min_m = pred_min_m
        self._state = torch.zeros(len(self._FIELDS), dtype=torch.float64, device=device)

    def _crop_mask(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        mask = torch.zeros(height, width, dtype=torch.bool, device=device)
        top, bottom, left, right = NYUD_EIGEN_CROP
        ref_h, ref_w = NYUD_EIGEN_CROP_SIZE
        mask[
            round(top * height / ref_h) : round(bottom * height / ref_h),
            round(left * width / ref_w) : round(right * width / ref_w),
        ] = True
        return mask

    def update(self, pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """pred, gt: (B, 1, H, W) or (B, H, W) metres, gt 0 = invalid."""
        pred = _as_b1hw(torch.as_tensor(pred)).to(torch.float64)
        gt = _as_b1hw(torch.as_tensor(gt)).to(device=pred.device, dtype=torch.float64)
        if pred.shape != gt.shape:
            raise ValueError(f"depth prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape")
        mask = torch.isfinite(gt) & (gt > self.min_depth_m)
        if self.max_depth_m is not None:
            mask &= gt < self.max_depth_m
        if self.eigen_crop:
            mask &= self._crop_mask(gt.shape[-2], gt.shape[-1], gt.device)
        mask &= _sample_mask(valid, gt.shape[0], gt.device).view(-1, 1, 1, 1)
        # Every term is summed per sample (dims C, H, W) so its value does not depend on the batch it came in;
        # where() keeps non-finite predictions on masked pixels out of the sums.
        d = torch.where(mask, pred.clamp_min(self.pred_min_m), torch.ones_like(pred))
        t = torch.where(mask, gt, torch.ones_like(gt))
        ratio = torch.maximum(d / t, t / d)
        zero = torch.zeros_like(d)
        terms = [
            mask.to(torch.float64),
            (d - t).abs() / t,
            (d - t).pow(2),
            (torch.log10(d) - torch.log10(t)).abs(),
            (ratio < 1.25).to(torch.float64),
            (ratio < 1.25**2).to(torch.float64),
            (ratio < 1.25**3).to(torch.float64),
        ]
        per_sample = torch.stack([torch.where(mask, x, zero).sum(dim=(1, 2, 3)) for x in terms], dim=1)
        self._add_per_sample(per_sample)

    def compute(self) -> dict[str, float]:
        s = dict(zip(self._FIELDS, self._state.tolist()))
        n = s["num_pixels"]
        if n == 0:
            return {k: math.nan for k in ("rel", "rms", "log10", "delta1", "delta2", "delta3")} | {"num_pixels": 0}
        return {
            "rel": s["sum_abs_rel"] / n,
            "rms": math.sqrt(s["sum_sq"] / n),
            "log10": s["sum_abs_log10"] / n,
            "delta1": s["num_delta1"] / n,
            "delta2": s["num_delta2"] / n,
            "delta3": s["num_delta3"] / n,
            "num_pixels": int(n),
        }


class ConfusionMetrics(Accumulator):
    """Semantic segmentation scores from a confusion matrix (rows ground truth, columns prediction).

    Ground-truth pixels equal to ignore_index are not counted. Conventions:
      iou[c] = TP / (TP + FP + FN); NaN for a class with no ground truth and no prediction (excluded from miou).
        A class predicted but absent from the ground truth has IoU 0 and counts in miou.
      miou = mean of the defined iou; mean_acc = mean over classes with ground-truth pixels of TP / #GT;
      pixel_acc = sum TP / #counted pixels.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, *, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._state = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """pred (B, H, W) predicted class ids in [0, num_classes); gt (B, H, W) ids or ignore_index."""
        pred = torch.as_tensor(pred).long()
        gt = torch.as_tensor(gt).to(pred.device).long()
        if pred.shape != gt.shape:
            raise ValueError(
                f"semantic prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape"
            )
        mask = (gt != self.ignore_index) & _sample_mask(valid, gt.shape[0], gt.device).view(-1, *([1] * (gt.dim() - 1)))
        gt, pred = gt[mask], pred[mask]
        for name, ids in (("ground truth", gt), ("prediction", pred)):
            if ids.numel() and (ids.min() < 0 or ids.max() >= self.num_classes):
                raise ValueError(
                    f"semantic {name} has ids outside [0, {self.num_classes}) besides ignore {self.ignore_index}"
                )
        counts = torch.bincount(gt * self.num_classes + pred, minlength=self.num_classes**2)
        self._state += counts.to(self._state.device)

    def confusion(self) -> torch.Tensor:
        """(C, C) int64, rows ground truth, columns prediction."""
        return self._state.view(self.num_classes, self.num_classes).clone()

    def compute(self) -> dict[str, object]:
        conf = self.confusion().to(torch.float64)
        tp = conf.diag()
        gt_count = conf.sum(dim=1)
        pred_count = conf.sum(dim=0)
        union = gt_count + pred_count - tp
        nan = torch.full_like(tp, math.nan)
        iou = torch.where(union > 0, tp / union.clamp_min(1), nan)
        acc = torch.where(gt_count > 0, tp / gt_count.clamp_min(1), nan)
        total = conf.sum().item()

        def nanmean(x: torch.Tensor) -> float:
            defined = x[~torch.isnan(x)]
            return defined.mean().item() if defined.numel() else math.nan

        return {
            "miou": nanmean(iou),
            "mean_acc": nanmean(acc),
            "pixel_acc": tp.sum().item() / total if total else math.nan,
            "iou": iou.tolist(),
            "acc": acc.tolist(),
            "num_pixels": int(total),
        }


SemanticMetrics = ConfusionMetrics


class NormalsMetrics(Accumulator):
    """Angular error of surface normals in degrees over valid pixels (ground truth not the zero vector).

    mean from the exact sum; pct_11_25 / pct_22_5 / pct_30 = share of pixels with error < threshold (strict,
    exact counts); median (mean of the two middle values for an even count) from a histogram of num_bins bins over
    [0, 180] degrees (default 0.01 degree wide), each order statistic taken as its bin's centre, so it is within
    half a bin width of the exact median and survives a sum-reduce. Predictions are normalised here; a zero prediction counts as a 90 degree error.
    """

    THRESHOLDS_DEG = (11.25, 22.5, 30.0)

    def __init__(self, num_bins: int = 18000, *, device: torch.device | str = "cpu") -> None:
        self.num_bins = num_bins
        self._state = torch.zeros(2 + len(self.THRESHOLDS_DEG) + num_bins, dtype=torch.float64, device=device)

    def update(self, pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """pred, gt: (B, 3, H, W) normals in the same frame; gt zero vector = invalid."""
        pred = torch.as_tensor(pred).to(torch.float64)
        gt = torch.as_tensor(gt).to(device=pred.device, dtype=torch.float64)
        if pred.shape != gt.shape:
            raise ValueError(
                f"normals prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape"
            )
        gt_norm = gt.norm(dim=1)
        mask = (gt_norm > 0) & _sample_mask(valid, gt.shape[0], gt.device).view(-1, 1, 1)
        cos = (pred * gt).sum(dim=1) / (pred.norm(dim=1).clamp_min(1e-12) * gt_norm.clamp_min(1e-12))
        angle_map = torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))  # (B, H, W)
        angle = angle_map[mask]
        bins = (angle * (self.num_bins / 180.0)).long().clamp(0, self.num_bins - 1)
        counts = [torch.bincount(bins, minlength=self.num_bins)]
        counts += [(angle < t).sum().view(1) for t in self.THRESHOLDS_DEG]
        # counts are integers (exact in any order); the angle sum is formed per sample, added sample by sample
        self._state[0] += float(angle.numel())
        self._state[2:] += torch.cat(counts[1:] + counts[:1]).to(self._state.device, torch.float64)
        angle_sums = torch.where(mask, angle_map, torch.zeros_like(angle_map)).sum(dim=(1, 2))
        self._add_per_sample(angle_sums.view(-1, 1), offset=1)

    def compute(self) -> dict[str, float]:
        n = self._state[0].item()
        if n == 0:
            return {
                "mean": math.nan,
                "median": math.nan,
                "pct_11_25": math.nan,
                "pct_22_5": math.nan,
                "pct_30": math.nan,
                "num_pixels": 0,
            }
        cum = self._state[2 + len(self.THRESHOLDS_DEG) :].cumsum(0)
        bin_width = 180.0 / self.num_bins

        def order_statistic(k: int) -> float:  # k-th smallest angle (0-based), as the centre of its bin
            j = int(torch.searchsorted(cum, torch.tensor(k + 1.0, dtype=torch.float64)).item())
            return (j + 0.5) * bin_width

        num = int(n)
        median = 0.5 * (order_statistic((num - 1) // 2) + order_statistic(num // 2))
        counts = self._state[2 : 2 + len(self.THRESHOLDS_DEG)].tolist()
        return {
            "mean": self._state[1].item() / n,
            "median": median,
            "pct_11_25": counts[0] / n,
            "pct_22_5": counts[1] / n,
            "pct_30": counts[2] / n,
            "num_pixels": int(n),
        }


class ContourMetrics(Accumulator):
    """Pixel-wise contour precision, recall and F-score at a probability threshold (a training diagnostic).

    A pixel is predicted a contour when prob >= threshold (0.5 = logit 0); target 1 contour, 0 not, ignore_index
    not counted. This is NOT the BSDS/HED benchmark F-measure, which matches boundaries within a distance tolerance
    and sweeps thresholds (ODS/OIS); exact pixel matching scores lower.
    """

    def __init__(self, threshold: float = 0.5, ignore_index: int = 255, *, device: torch.device | str = "cpu") -> None:
        self.threshold = threshold
        self.ignore_index = ignore_index
        self._state = torch.zeros(4, dtype=torch.int64, device=device)  # tp, fp, fn, tn

    def update(self, prob: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """prob (B, 1, H, W) or (B, H, W) contour probabilities; target same shape, 1/0/ignore_index."""
        prob = _as_b1hw(torch.as_tensor(prob))
        target = _as_b1hw(torch.as_tensor(target)).to(prob.device)
        if prob.shape != target.shape:
            raise ValueError(f"contour prediction {tuple(prob.shape)} and target {tuple(target.shape)} differ in shape")
        mask = (target != self.ignore_index) & _sample_mask(valid, target.shape[0], target.device).view(-1, 1, 1, 1)
        predicted = (prob >= self.threshold)[mask]
        actual = (target == 1)[mask]
        counts = torch.stack(
            [
                (predicted & actual).sum(),
                (predicted & ~actual).sum(),
                (~predicted & actual).sum(),
                (~predicted & ~actual).sum(),
            ]
        )
        self._state += counts.to(self._state.device)

    def compute(self) -> dict[str, float]:
        tp, fp, fn, _ = (float(v) for v in self._state.tolist())
        precision = tp / (tp + fp) if tp + fp else math.nan
        recall = tp / (tp + fn) if tp + fn else math.nan
        # 2PR / (P + R) written with counts: defined (0) even when nothing is predicted but contours exist.
        f_score = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
        return {"precision": precision, "recall": recall, "f_score": f_score}
