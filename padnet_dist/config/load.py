"""Loading a config: defaults <- YAML file(s) <- dotlist overrides, validated at once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from padnet_dist.config.schema import Config
from padnet_dist.errors import UserError


class ConfigError(UserError, ValueError):
    """A config that cannot be used; the message names the key and the fix."""


def load_config(paths: str | Path | Sequence[str | Path] | None = None, overrides: Sequence[str] = ()) -> Config:
    """Return the validated config from YAML file(s), applied in order, and ``key=value`` overrides.

    Unknown keys, wrong types and missing values raise ``ConfigError`` naming the full key path.
    """
    if paths is None:
        paths = []
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    merged = OmegaConf.structured(Config)
    path: str | Path | None = None
    try:
        for path in paths:
            if not Path(path).is_file():
                raise ConfigError(
                    f"config file {path} does not exist: pass a file from configs/, e.g. configs/tiny.yaml"
                )
            merged = OmegaConf.merge(merged, OmegaConf.load(path))
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ConfigError(f"override '{bad[0]}' is not key=value: write e.g. model.distillation=B")
            path = "command-line overrides"
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        first_line = str(e).splitlines()[0]
        raise ConfigError(f"config key '{key}': {first_line} (source: {path or 'defaults'})") from None
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(str(e)) from None
    assert isinstance(cfg, Config)
    return cfg


def to_yaml(cfg: Config) -> str:
    """The full resolved config as YAML (what a run records beside its checkpoints)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def from_yaml_text(text: str) -> Config:
    """Inverse of ``to_yaml`` (used when a checkpoint's config is read back)."""
    merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(text))
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, Config)
    return cfg
