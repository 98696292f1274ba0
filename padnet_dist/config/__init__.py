"""Typed configuration: ``load_config(path, overrides)`` returns a validated ``Config``."""

from padnet_dist.config.data import DataConfig
from padnet_dist.config.load import ConfigError, from_yaml_text, load_config, to_yaml
from padnet_dist.config.model import ModelConfig
from padnet_dist.config.optim import LossConfig, OptimConfig, PhaseConfig, PhasesConfig
from padnet_dist.config.pipeline import PipelineConfig
from padnet_dist.config.run import EngineConfig, RunConfig, StorageConfig
from padnet_dist.config.schema import Config

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "EngineConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "PhaseConfig",
    "PhasesConfig",
    "PipelineConfig",
    "RunConfig",
    "StorageConfig",
    "from_yaml_text",
    "load_config",
    "to_yaml",
]
