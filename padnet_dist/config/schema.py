"""The one config tree. Every field has a typed home here; YAML files only override."""

from __future__ import annotations

from dataclasses import dataclass, field

from padnet_dist.config.data import DataConfig
from padnet_dist.config.model import ModelConfig
from padnet_dist.config.optim import LossConfig, OptimConfig, PhasesConfig
from padnet_dist.config.pipeline import PipelineConfig
from padnet_dist.config.run import EngineConfig, RunConfig, StorageConfig


@dataclass(kw_only=True)
class Config:
    phase: int = 1
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    phases: PhasesConfig = field(default_factory=PhasesConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    run: RunConfig = field(default_factory=RunConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def __post_init__(self) -> None:
        if self.phase not in (1, 2):
            raise ValueError(f"phase={self.phase}: use phase=1 (front end + scene parsing) or phase=2 (whole network)")
        source = self.pipeline.phase1_from
        if source and source.rstrip("/") == self.run.dir.rstrip("/"):
            raise ValueError(
                f"pipeline.phase1_from={source} is this run's own run.dir: leave it empty to train phase 1 here, or "
                "name the run dir of the run whose phase 1 to start from"
            )
        if source and source.startswith("s3://") != self.run.dir.startswith("s3://"):
            raise ValueError(
                f"pipeline.phase1_from={source} and run.dir={self.run.dir} are on different storage: the run whose "
                "phase 1 is shared must be where this run is (both s3:// or both local)"
            )
        # mirrors PADNet.phase_outputs(1): scene parsing, or depth for a model without it (Front-end + DE)
        inter = self.model.intermediate_tasks
        if self.phase == 1 and self.model.variant != "frontend" and "semantic" not in inter and "depth" not in inter:
            raise ValueError(
                "phase=1 trains the front end with scene parsing (or depth), but model.intermediate_tasks has "
                "neither 'semantic' nor 'depth': add one (phase 2 starts from phase 1's checkpoint)"
            )
