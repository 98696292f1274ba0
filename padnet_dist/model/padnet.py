"""PAD-Net assembled (paper §3, Figure 2) and its ablation variants (Tables 1, 2 and 6).

Variants:
  - ``frontend``: the baselines Front-end + DE / + SP / + DE + SP. Per final task a ``Bridge`` takes the
    front-end features to ``distill_channels`` at 1/4 resolution and a ``Decoder`` predicts. No intermediate tasks.
  - ``padnet``: front end -> intermediate predictions -> distillation (A, B or C) of the predictions named in
    ``distill_inputs`` -> one decoder per final task. With ``distill_inputs=[]`` (MTDN-inp0) the intermediate
    heads only supervise the front end and the decoders are fed by ``Bridge`` modules as in the baseline.
  - ``mtdn_mds``: as ``padnet``, but ``F^t`` is made from the task *features* (the output of each intermediate
    head's deconvolution, N or N/2 channels, resized to 1/4) instead of from its prediction ``Y^t``.
``supervise_intermediate=False`` keeps the network and only changes what phase 2 trains against targets: the final
outputs alone, so the intermediate heads learn only through the distillation (the other reading of MTDN-mds).
Only the modules a variant uses are created.

Initialisation is a function of torch's global generator state at construction and of each module's own name and
shape, never of which other modules exist: the backbone is built first, and every other module draws from a
generator seeded by one number taken from the global generator before anything else and by the module's qualified
name. So two variants with the same front end and phase-1 head (e.g. distillation A and C, or final DE and DE+SP)
start phase 1 from bitwise the same weights, which is what lets a sweep train that phase 1 once for all of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from padnet_dist.model.decoder import Bridge, Decoder
from padnet_dist.model.distillation import DISTILLATIONS, DistillationInputs
from padnet_dist.model.frontend import FrontEnd
from padnet_dist.model.heads import (
    IntermediateHead,
    MultiTaskPrediction,
    init_score_conv,
    init_upsampling_deconv,
    score_channels,
)
from padnet_dist.vocabulary import FINAL_TASKS, TASKS, VARIANTS

OUTPUT_NAMES = tuple(f"inter_{t}" for t in TASKS) + tuple(f"final_{t}" for t in FINAL_TASKS)
_SHORT = {"depth": "DE", "semantic": "SP"}


def _ordered(tasks: Iterable[str], allowed: Sequence[str], what: str) -> list[str]:
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in allowed]
    if unknown or len(set(tasks)) != len(tasks):
        raise ValueError(f"{what}={tasks}: use distinct names among {', '.join(allowed)}")
    return [t for t in allowed if t in tasks]


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return (
        x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    )


class PADNet(nn.Module):
    """PAD-Net. ``forward(rgb (B, 3, H, W), outputs=None) -> {name: tensor}`` with names from ``output_names``:

    ``inter_depth (B, 1, H//4, W//4)`` metres, ``inter_normals (B, 3, ..)`` un-normalised vectors,
    ``inter_semantic (B, num_classes, ..)`` logits, ``inter_contour (B, 1, ..)`` logit, ``final_depth (B, 1, H, W)``
    metres, ``final_semantic (B, num_classes, H, W)`` logits. Depth is a raw regression (no activation), so it
    may be negative early in training; "metres" is the default training target (a run with ``data.depth_target``
    disparity or inverse_depth trains the same outputs in pixels or 1/m). ``outputs`` restricts what is computed and returned.
    Task lists are kept in the canonical order depth, normals, semantic, contour.
    """

    def __init__(
        self,
        *,
        backbone: str = "resnet101",
        output_stride: int = 8,
        aggregation_channels: int = 256,
        width: int = 512,
        distill_channels: int = 256,
        num_classes: int = 19,
        variant: str = "padnet",
        distillation: str = "C",
        final_tasks: Sequence[str] = FINAL_TASKS,
        intermediate_tasks: Sequence[str] = TASKS,
        distill_inputs: Sequence[str] = TASKS,
        supervise_intermediate: bool = True,
        depth_init: float = 0.0,
    ) -> None:
        super().__init__()
        # before the backbone draws anything: the one number every non-backbone module's init derives from
        init_seed = int(torch.randint(0, 2**62, (1,), device="cpu").item())
        if variant not in VARIANTS:
            raise ValueError(f"variant='{variant}' is not one of {', '.join(VARIANTS)}")
        if distillation not in DISTILLATIONS:
            raise ValueError(f"distillation='{distillation}' is not one of {', '.join(DISTILLATIONS)}")
        self.variant, self.backbone_name, self.output_stride = variant, backbone, output_stride
        self.num_classes = num_classes
        self.final_tasks = _ordered(final_tasks, FINAL_TASKS, "final_tasks")
        if not self.final_tasks:
            raise ValueError("final_tasks is empty: list at least one of depth, semantic")
        is_baseline = variant == "frontend"
        self.intermediate_tasks = [] if is_baseline else _ordered(intermediate_tasks, TASKS, "intermediate_tasks")
        self.distill_tasks = [] if is_baseline else _ordered(distill_inputs, TASKS, "distill_inputs")
        missing = [t for t in self.distill_tasks if t not in self.intermediate_tasks]
        if missing:
            raise ValueError(f"distill_inputs {missing} are not intermediate tasks: add them to intermediate_tasks")
        self.distillation_name = distillation if self.distill_tasks else ""
        self.supervise_intermediate = supervise_intermediate
        idle = [t for t in self.intermediate_tasks if t not in self.distill_tasks]
        if not supervise_intermediate and (is_baseline or idle or not self.distill_tasks):
            raise ValueError(
                "supervise_intermediate=False needs every intermediate task distilled (else its head never "
                f"trains); not distilled: {idle or 'all'}"
            )

        self.frontend = FrontEnd(backbone, output_stride, aggregation_channels)
        in_channels = self.frontend.out_channels
        self.intermediate = (
            MultiTaskPrediction(in_channels, self.intermediate_tasks, width, num_classes)
            if self.intermediate_tasks
            else None
        )
        if self.distill_tasks:
            heads = self.intermediate.heads
            source_channels = {
                t: heads[t].feature_channels if variant == "mtdn_mds" else heads[t].out_channels
                for t in self.distill_tasks
            }
            self.distill_encoders = DistillationInputs(source_channels, distill_channels)
            self.distillation = DISTILLATIONS[distillation](self.distill_tasks, self.final_tasks, distill_channels)
            self.bridges = None
            decoder_channels = self.distillation.out_channels
        else:
            self.distill_encoders = self.distillation = None
            self.bridges = nn.ModuleDict({k: Bridge(in_channels, distill_channels) for k in self.final_tasks})
            decoder_channels = distill_channels
        self.decoders = nn.ModuleDict(
            {k: Decoder(decoder_channels, score_channels(k, num_classes)) for k in self.final_tasks}
        )
        self.output_names = tuple(f"inter_{t}" for t in self.intermediate_tasks) + tuple(
            f"final_{k}" for k in self.final_tasks
        )
        self._init_new_modules(depth_init, init_seed)

    def _init_new_modules(self, depth_init: float, init_seed: int) -> None:
        """Kaiming-normal (fan_out, ReLU) convolutions with zero bias, deconvolutions as bilinear upsampling with a
        random channel mixing (``init_upsampling_deconv``), BN at identity; the backbone keeps its own.

        The score convolutions (intermediate heads and decoders) are linear outputs, not followed by a ReLU: they
        get ``init_score_conv`` instead, so every prediction starts within about one unit of its bias rather than at the
        several units of spread a ReLU-gain fan_out init gives a 1-3 channel output. The
        depth score convolutions' bias is ``depth_init`` (in the depth target's unit). Each module draws from its own
        generator (``_module_generator``), so its weights do not depend on which other modules the variant has.
        """
        for name, module in self.named_modules():
            if name.startswith("frontend.backbone"):
                continue
            if isinstance(module, nn.ConvTranspose2d):
                init_upsampling_deconv(module, _module_generator(init_seed, name))
            elif isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(
                    module.weight, mode="fan_out", nonlinearity="relu", generator=_module_generator(init_seed, name)
                )
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for name, module in self.named_modules():
            if isinstance(module, (IntermediateHead, Decoder)):
                init_score_conv(module.score, _module_generator(init_seed, f"{name}.score:linear"))
        depth_scores = [self.decoders[k].score for k in self.decoders if k == "depth"]
        if "depth" in self.intermediate_tasks:
            depth_scores.append(self.intermediate.heads["depth"].score)
        for conv in depth_scores:
            nn.init.constant_(conv.bias, depth_init)

    def forward(self, rgb: torch.Tensor, outputs: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        names = self.output_names if outputs is None else tuple(outputs)
        unknown = [n for n in names if n not in self.output_names]
        if unknown:
            raise ValueError(f"outputs {unknown} are not produced by this model: choose from {list(self.output_names)}")
        height, width = rgb.shape[-2:]
        full, quarter = (height, width), (height // 4, width // 4)
        features = self.frontend(rgb)
        result: dict[str, torch.Tensor] = {}

        finals = [k for k in self.final_tasks if f"final_{k}" in names]
        distilling = bool(finals) and self.distillation is not None
        head_tasks = [
            t for t in self.intermediate_tasks if f"inter_{t}" in names or (distilling and t in self.distill_tasks)
        ]
        heads = self.intermediate(features, quarter, head_tasks) if head_tasks else {}
        for t, (_, prediction) in heads.items():
            result[f"inter_{t}"] = prediction

        if distilling:
            # MTDN-mds distils the task features (2x front-end resolution), PAD-Net the predictions (1/4)
            which = 0 if self.variant == "mtdn_mds" else 1
            sources = {t: _resize(heads[t][which], quarter) for t in self.distill_tasks}
            fused = self.distillation(self.distill_encoders(sources))
            for k in finals:
                result[f"final_{k}"] = self.decoders[k](fused[k], full)
        else:
            for k in finals:
                result[f"final_{k}"] = self.decoders[k](self.bridges[k](features, quarter), full)
        return {n: result[n] for n in names}

    def phase_outputs(self, phase: int) -> tuple[str, ...]:
        """Outputs trained (and scored) in ``phase``.

        1 = scene parsing on the front end (§4.1): ``inter_semantic`` (``final_semantic`` for the baseline); a model
        without scene parsing (Front-end + DE) uses its depth output the same way, so it never sees semantic
        labels. 2 = every output, or only the final ones with ``supervise_intermediate=False``.
        """
        if phase == 2:
            if self.supervise_intermediate:
                return self.output_names
            return tuple(f"final_{k}" for k in self.final_tasks)
        if phase != 1:
            raise ValueError(f"phase={phase}: use 1 (front end + scene parsing) or 2 (whole network)")
        prefix = "final" if self.variant == "frontend" else "inter"
        for task in ("semantic", "depth"):
            if f"{prefix}_{task}" in self.output_names:
                return (f"{prefix}_{task}",)
        raise ValueError(
            f"phase 1 trains the front end with scene parsing (or depth) but this {self.variant} model has neither "
            f"{prefix}_semantic nor {prefix}_depth: add 'semantic' or 'depth' to model.intermediate_tasks"
        )

    def phase_modules(self, phase: int) -> dict[str, nn.Module]:
        """Qualified name -> module of what ``phase`` trains: 1 = the front end + the modules producing
        ``phase_outputs(1)`` (the intermediate head, or the baseline's bridge and decoder); 2 = the whole model ("")."""
        if phase == 2:
            return {"": self}
        (name,) = self.phase_outputs(phase)
        kind, task = name.split("_", 1)
        if kind == "inter":
            return {"frontend": self.frontend, f"intermediate.heads.{task}": self.intermediate.heads[task]}
        return {
            "frontend": self.frontend,
            f"bridges.{task}": self.bridges[task],
            f"decoders.{task}": self.decoders[task],
        }

    def phase_parameters(self, phase: int) -> list[nn.Parameter]:
        """Parameters optimised in ``phase``: those of ``phase_modules(phase)``."""
        return [p for m in self.phase_modules(phase).values() for p in m.parameters()]

    def phase_state_names(self, phase: int) -> tuple[str, ...]:
        """The ``state_dict`` keys ``phase`` changes: the parameters of ``phase_modules(phase)`` and their buffers
        (BatchNorm statistics). Phase 2 starts from exactly these of a phase-1 checkpoint."""
        if phase == 2:
            return tuple(self.state_dict())
        prefixes = tuple(f"{name}." for name in self.phase_modules(phase))
        return tuple(k for k in self.state_dict() if k.startswith(prefixes))

    def describe(self) -> str:
        """A readable one-line name of the variant, e.g. ``PAD-Net (distillation C; final DE+SP; ...) ResNet-101 OS8``."""
        finals = "+".join(_SHORT[k] for k in self.final_tasks)
        net = f"{self.frontend.backbone.display_name} OS{self.output_stride}"
        if self.variant == "frontend":
            return f"Front-end baseline (final {finals}) {net}"
        inter = ",".join(self.intermediate_tasks) or "none"
        if not self.supervise_intermediate:
            inter += " unsupervised"
        if not self.distill_tasks:
            return f"PAD-Net MTDN-inp0 (no distillation inputs; final {finals}; intermediate {inter}) {net}"
        fed = "task features" if self.variant == "mtdn_mds" else "predictions"
        name = "MTDN-mds" if self.variant == "mtdn_mds" else "PAD-Net"
        return (
            f"{name} (distillation {self.distillation_name}; final {finals}; inputs {','.join(self.distill_tasks)} "
            f"{fed}; intermediate {inter}) {net}"
        )


def _module_generator(init_seed: int, module_name: str) -> torch.Generator:
    """A generator for one module's initialisation, seeded by ``init_seed`` and the module's qualified name (a stable
    hash: Python's ``hash`` of a string changes between processes)."""
    digest = hashlib.sha256(f"{init_seed}/{module_name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
