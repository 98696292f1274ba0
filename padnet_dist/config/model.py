"""Model section of the config: which PAD-Net variant to build and how wide it is."""

from __future__ import annotations

from dataclasses import dataclass, field

from padnet_dist.vocabulary import BACKBONES, DISTILLATIONS, FINAL_TASKS, TASKS, VARIANTS

__all__ = ["BACKBONES", "DISTILLATIONS", "FINAL_TASKS", "TASKS", "VARIANTS", "ModelConfig"]


def _all_tasks() -> list[str]:
    return list(TASKS)


def _final_tasks() -> list[str]:
    return list(FINAL_TASKS)


@dataclass(kw_only=True)
class ModelConfig:
    """The network (paper §3).

    variant:
      - ``frontend``: baseline, the front end predicts the final tasks directly (Front-end + DE / + SP).
      - ``padnet``: intermediate predictions -> distillation -> decoders (the paper's model and the
        MTDN-inp* rows, chosen by ``distill_inputs``).
      - ``mtdn_mds``: same capacity and intermediate supervision, but distillation is fed task
        features instead of predictions (Table 6, MTDN-mds as ``configs/ablations/t6_mtdn_mds.yaml`` reads it).

    supervise_intermediate: phase 2 trains the intermediate predictions against their targets (the paper's deep
    supervision). ``false`` keeps the same network but trains it through the final losses only; every
    intermediate task must then be distilled, or nothing would train its head (the other reading of MTDN-mds,
    ``configs/ablations/t6_mtdn_mds_unsupervised.yaml``). Phase 1 is unchanged (front end + scene parsing).
    backbone ``alexnet`` (Tables 1-2) supports output_stride 8 or 16.
    """

    backbone: str = "resnet101"
    pretrained: str = (
        ""  # "" random init; a path or s3:// URL to a torchvision state dict; or a torchvision weight name
    )
    output_stride: int = 8
    aggregation_channels: int = 256  # channels each earlier stage is reduced to before concatenation
    width: int = 512  # N of §3.3: depth/semantic task features get N channels, normals/contour N/2
    distill_channels: int = 256  # channels of F^t, the features made from each intermediate prediction
    num_classes: int = 19
    variant: str = "padnet"
    distillation: str = "C"
    final_tasks: list[str] = field(default_factory=_final_tasks)
    intermediate_tasks: list[str] = field(default_factory=_all_tasks)  # intermediate heads (see supervise_intermediate)
    distill_inputs: list[str] = field(default_factory=_all_tasks)  # predictions fed to distillation
    supervise_intermediate: bool = True
    # Initial bias of the depth score convolutions (intermediate head and decoder), in data.depth_target's unit:
    # 0 is the paper's plain random init; the training split's mean depth starts depth at the mean-depth baseline,
    # so the first steps of phase 2 do not spend an L2 gradient 5x the other terms' on learning one constant.
    depth_init: float = 0.0

    def __post_init__(self) -> None:
        _one_of("model.backbone", self.backbone, BACKBONES)
        _one_of("model.variant", self.variant, VARIANTS)
        _one_of("model.distillation", self.distillation, DISTILLATIONS)
        if self.output_stride not in (8, 16, 32):
            raise ValueError(f"model.output_stride={self.output_stride}: use 8, 16 or 32")
        if self.backbone == "alexnet" and self.output_stride == 32:
            raise ValueError("model.output_stride=32 with model.backbone=alexnet: AlexNet supports 8 or 16")
        for name in ("width", "distill_channels", "aggregation_channels", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1")
        if self.width % 2:
            raise ValueError(f"model.width={self.width}: must be even (normals and contours use width/2)")
        if not self.final_tasks:
            raise ValueError("model.final_tasks is empty: list at least one of depth, semantic")
        for t in self.final_tasks:
            _one_of("model.final_tasks", t, FINAL_TASKS)
        for t in self.intermediate_tasks:
            _one_of("model.intermediate_tasks", t, TASKS)
        for t in self.distill_inputs:
            _one_of("model.distill_inputs", t, TASKS)
            if self.variant != "frontend" and t not in self.intermediate_tasks:
                raise ValueError(
                    f"model.distill_inputs has '{t}' but model.intermediate_tasks does not: "
                    f"add '{t}' to model.intermediate_tasks or remove it from model.distill_inputs"
                )
        if not self.supervise_intermediate:
            if self.variant == "frontend":
                raise ValueError(
                    "model.supervise_intermediate=false with model.variant=frontend: the baseline has no "
                    "intermediate tasks; use variant padnet or mtdn_mds, or leave supervise_intermediate true"
                )
            idle = [t for t in self.intermediate_tasks if t not in self.distill_inputs]
            if idle:
                raise ValueError(
                    f"model.supervise_intermediate=false: intermediate tasks {idle} would be neither supervised "
                    "nor distilled: add them to model.distill_inputs"
                )
            if not self.distill_inputs:
                raise ValueError(
                    "model.supervise_intermediate=false needs distilled intermediate tasks (model.distill_inputs is "
                    "empty): list them, or leave supervise_intermediate true"
                )
        if self.variant == "padnet" and self.distillation in ("B", "C") and self.distill_inputs:
            missing = [t for t in self.final_tasks if t not in self.distill_inputs]
            if missing:
                raise ValueError(
                    f"model.distillation={self.distillation} refines each final task from its own "
                    f"intermediate prediction, but model.distill_inputs lacks {missing}: add them"
                )


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{key}='{value}' is not one of {', '.join(allowed)}")
