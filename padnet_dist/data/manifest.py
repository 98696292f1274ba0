"""The manifest: the one file that publishes a split's shards (``{split}.manifest.json``, written last).

Shard names are relative to the manifest's directory, so a dataset directory can be moved or copied (local to
S3 and back) without rewriting it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from padnet_dist.config.run import StorageConfig
from padnet_dist.data.format import FORMAT_VERSION
from padnet_dist.errors import UserError
from padnet_dist.storage import join_url, parent_url, storage_for
from padnet_dist.storage.base import StorageNotFound


class ManifestError(UserError):
    """A manifest is missing, malformed or from an incompatible format version."""


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
    """Atomically write ``manifest`` to ``url``. Call it only after every shard it lists is in place."""
    storage_for(url, storage_cfg).write_bytes(url, manifest.to_json().encode())
