"""Data section of the config: where the shards are and how samples become batches."""

from __future__ import annotations

from dataclasses import dataclass, field

DEPTH_TARGETS = ("depth", "disparity", "inverse_depth")


def _cityscapes_scales() -> list[float]:
    return [0.5, 0.75, 1.0, 1.25, 1.75]


@dataclass(kw_only=True)
class DataConfig:
    """Shards, loader and augmentation (paper §4.1).

    Manifests are URLs (local path or ``s3://bucket/key``) written by ``padnet-dist shard``.
    ``batch_size`` is per rank.

    Depth: the shards hold metric depth (metres, 0 = invalid). ``depth_target`` is what the depth heads learn and
    what depth metrics score: ``depth`` (metres), ``disparity`` (pixels at the network input's resolution,
    baseline * fx / depth from each sample's camera: needs a stereo baseline, which Cityscapes shards have) or
    ``inverse_depth`` (1/metres). Ground truth at or below ``min_depth_m`` or at or above ``max_depth_m`` (metres,
    0 = no upper bound) is invalid in every batch, so masked in the losses and the metrics.
    """

    train_manifest: str = ""
    val_manifest: str = ""
    batch_size: int = 8
    eval_batch_size: int = 1
    num_workers: int = 2
    persistent_workers: bool = True  # training: keep the workers across epochs (no fork and warm-up per epoch)
    crop_height: int = 640
    crop_width: int = 640
    scales: list[float] = field(default_factory=_cityscapes_scales)
    divide_depth_by_scale: bool = True  # §4.1: scaled by s, depth divided by s (disparity scales by s either way)
    depth_target: str = "depth"  # depth | disparity | inverse_depth (see the class docstring)
    min_depth_m: float = 0.0  # valid ground truth: min_depth_m < depth (metres, before augmentation)
    max_depth_m: float = 0.0  # valid ground truth: depth < max_depth_m; 0 = no upper bound
    flip_prob: float = 0.5
    shuffle: bool = True
    shuffle_block_batches: int = 8  # samples are shuffled within blocks of this many batches
    seed: int = 0
    contour_width: int = 1  # pixels either side of a label boundary
    ignore_index: int = 255
    strict: bool = False  # True: fail on the first corrupt sample instead of skipping it
    cache_dir: str = ""  # per-node local cache of remote shards ("" = stream only)
    pin_memory: bool = True  # page-locked batches for non-blocking host-to-GPU copies (used on cuda only)
    log_sample_keys: bool = False  # add the keys of the samples each step trained on to the rank's JSONL log (audit)

    def __post_init__(self) -> None:
        for name in ("batch_size", "eval_batch_size", "crop_height", "crop_width", "shuffle_block_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1")
        if self.num_workers < 0:
            raise ValueError("data.num_workers must be >= 0 (0 loads in the training process)")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError("data.scales must be a non-empty list of positive ratios, e.g. [1.0, 1.2, 1.5]")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError("data.flip_prob must be in [0, 1]")
        if self.contour_width < 1:
            raise ValueError("data.contour_width must be >= 1")
        if self.depth_target not in DEPTH_TARGETS:
            raise ValueError(f"data.depth_target='{self.depth_target}' is not one of {', '.join(DEPTH_TARGETS)}")
        if self.min_depth_m < 0 or self.max_depth_m < 0:
            raise ValueError("data.min_depth_m and data.max_depth_m must be >= 0 metres (max 0 = no upper bound)")
        if 0 < self.max_depth_m <= self.min_depth_m:
            raise ValueError(
                f"data.max_depth_m={self.max_depth_m} leaves no valid depth above data.min_depth_m={self.min_depth_m}: "
                "raise max_depth_m or set it to 0 (no upper bound)"
            )
