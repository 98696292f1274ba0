"""The manifest: the one file that publishes a split's shards (``{split}.manifest.json``, written last).

Shard names are relative to the manifest's directory, so a dataset directory can be moved or copied (local to
S3 and back) without rewriting it. The format's spec is ``shards/README.md``; the JSON Schema
``shards/manifest.schema.json`` is checked (``jsonschema``) when a manifest is written and when it is read.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from padnet_dist.config.run import StorageConfig
from padnet_dist.data.format import FORMAT_VERSION
from padnet_dist.errors import UserError
from padnet_dist.storage import join_url, parent_url, storage_for
from padnet_dist.storage.base import StorageNotFound

# Shipped inside the package (a plain `pip install` has no repository); shards/manifest.schema.json links here.
MANIFEST_SCHEMA_PATH = Path(__file__).resolve().with_name("manifest.schema.json")


class ManifestError(UserError):
    """A manifest is missing, malformed or from an incompatible format version."""


@functools.cache
def _schema_validator() -> Any:
    from jsonschema import Draft202012Validator

    try:
        schema = json.loads(MANIFEST_SCHEMA_PATH.read_text())
    except FileNotFoundError:
        raise ManifestError(
            f"the manifest schema {MANIFEST_SCHEMA_PATH} is missing: install padnet-dist from its repository "
            "(pip install -e .)"
        ) from None
    return Draft202012Validator(schema)


def validate_manifest_dict(data: Any) -> None:
    """Check parsed manifest JSON against ``shards/manifest.schema.json``; ValueError naming the first failing
    field (``shards/2/sha256: ...``) otherwise."""
    error = next(iter(sorted(_schema_validator().iter_errors(data), key=lambda e: list(e.absolute_path))), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "top level"
        raise ValueError(f"{where}: {error.message}")


@dataclass
class ShardInfo:
    """One tar shard: ``name`` relative to the manifest's directory, its sample count, size and SHA-256."""

    name: str
    num_samples: int
    num_bytes: int
    sha256: str
    keys: list[str] = field(default_factory=list)  # sample keys in tar order

    @property
    def first_key(self) -> str:
        return self.keys[0] if self.keys else ""


@dataclass
class Manifest:
    """A split's shards and what a trainer needs to know about the labels and cameras."""

    format_version: int
    dataset: str
    split: str
    num_samples: int
    shards: list[ShardInfo]
    classes: list[str]
    palette: list[tuple[int, int, int]]
    ignore_index: int = 255
    camera_defaults: dict = field(default_factory=dict)
    rgb_format: str = "png"
    created_by: str = ""

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    @property
    def num_bytes(self) -> int:
        return sum(s.num_bytes for s in self.shards)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def shard_urls(self, manifest_url: str) -> list[str]:
        """Absolute shard URLs, resolved against the directory holding the manifest."""
        base = parent_url(manifest_url)
        return [join_url(base, s.name) for s in self.shards]

    def locate(self, index: int) -> tuple[int, int]:
        """Sample ``index`` (0-based over the split) -> (shard number, position inside the shard)."""
        if not 0 <= index < self.num_samples:
            raise UserError(f"sample index {index} is outside 0..{self.num_samples - 1} of {self.dataset}/{self.split}")
        for shard_number, shard in enumerate(self.shards):
            if index < shard.num_samples:
                return shard_number, index
            index -= shard.num_samples
        raise ManifestError("manifest num_samples disagrees with its shards")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        """Build from parsed JSON; raises KeyError/TypeError/ValueError when malformed."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["shards"] = [ShardInfo(**s) for s in data["shards"]]
        kwargs["palette"] = [tuple(int(c) for c in rgb) for rgb in data.get("palette", [])]
        manifest = cls(**kwargs)
        if manifest.num_samples != sum(s.num_samples for s in manifest.shards):
            raise ValueError("num_samples is not the sum of the shards' num_samples")
        return manifest


def manifest_url_for(out_url: str, split: str) -> str:
    return join_url(out_url, f"{split}.manifest.json")


def read_manifest(url: str, storage_cfg: StorageConfig | None = None) -> Manifest:
    """Read and validate a manifest; a missing, malformed or too new one is a one-line ``ManifestError``."""
    try:
        text = storage_for(url, storage_cfg).read_bytes(url)
    except StorageNotFound:
        raise ManifestError(
            f"no shard manifest at {url}: create the shards with `padnet-dist shard ...` or fix the URL"
        ) from None
    try:
        data = json.loads(text)
        validate_manifest_dict(data)
        manifest = Manifest.from_dict(data)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ManifestError(
            f"malformed shard manifest {url} ({type(e).__name__}: {e}): rewrite it with `padnet-dist shard ...`"
        ) from None
    if manifest.format_version > FORMAT_VERSION:
        raise ManifestError(
            f"{url} has shard format {manifest.format_version}, this padnet-dist reads up to {FORMAT_VERSION}: "
            "upgrade padnet-dist"
        )
    return manifest


def write_manifest(manifest: Manifest, url: str, storage_cfg: StorageConfig | None = None) -> None:
    """Atomically write ``manifest`` to ``url``. Call it only after every shard it lists is in place.

    A manifest that does not satisfy the schema is a ``ManifestError`` and nothing is written."""
    text = manifest.to_json()
    try:
        validate_manifest_dict(json.loads(text))
    except ValueError as e:
        raise ManifestError(f"refusing to write manifest {url}: {e}") from None
    storage_for(url, storage_cfg).write_bytes(url, text.encode())
