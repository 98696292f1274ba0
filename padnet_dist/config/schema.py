"""The one config tree. Every field has a typed home here; YAML files only override."""

from __future__ import annotations

from dataclasses import dataclass, field

from padnet_dist.config.data import DataConfig
from padnet_dist.config.model import ModelConfig
from padnet_dist.config.optim import LossConfig, OptimConfig, PhasesConfig
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

    def __post_init__(self) -> None:
        if self.phase not in (1, 2):
            raise ValueError(f"phase={self.phase}: use phase=1 (front end + scene parsing) or phase=2 (whole network)")
        if self.phase == 1 and "semantic" not in self.model.intermediate_tasks and self.model.variant != "frontend":
            raise ValueError(
                "phase=1 trains the front end with scene parsing, but model.intermediate_tasks lacks 'semantic': "
                "add it, or start at phase=2"
            )
