"""Dataset converters: one module per dataset, chosen by name from an explicit registry.

A converter module exposes
    ``SUMMARY``  one line describing the dataset;
    ``OPTIONS``  the frozen dataclass of its typed inputs (files, split, sizes), e.g. ``SyntheticOptions``;
    ``plan(options: OPTIONS) -> Conversion`` checks the inputs cheaply (files present, splits known) and lists
    the jobs; bad input is a one-line UserError naming the value and the fix.
Converters know nothing of the command line: ``padnet-dist shard <name>`` maps its flags to ``OPTIONS``.
``Conversion.jobs`` are small picklable descriptors and ``Conversion.load(job) -> sample dict`` (a module-level
function or ``functools.partial``) turns one into a sample (docs/contracts.md) inside a writer worker.
Modules are imported only when asked for, so listing the registry imports nothing heavy (h5py, scipy).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from padnet_dist.config.run import StorageConfig
from padnet_dist.errors import UserError

CONVERTERS: dict[str, str] = {
    "cityscapes": "padnet_dist.data.converters.cityscapes",
    "nyud": "padnet_dist.data.converters.nyud",
    "synthetic": "padnet_dist.data.converters.synthetic",
}


@dataclass(frozen=True)
class Conversion:
    """What the shard writer needs: jobs, the loader of one job, and the dataset's label description."""

    jobs: Sequence[Any]
    load: Callable[[Any], dict]
    info: Any  # padnet_dist.data.writer.DatasetInfo
    source: str  # human-readable description of the input, for the progress line


def get_converter(name: str) -> ModuleType:
    """The converter module registered as `name`."""
    if name not in CONVERTERS:
        raise UserError(f"unknown dataset '{name}': choose one of {', '.join(CONVERTERS)}")
    return importlib.import_module(CONVERTERS[name])


def convert_dataset(
    name: str,
    options: Any,
    *,
    out_url: str,
    storage_cfg: StorageConfig | None = None,
    samples_per_shard: int | None = None,
    target_shard_bytes: int = 1_000_000_000,
    num_workers: int = 1,
    rgb_format: str = "png",
    progress: bool = True,
):  # noqa: ANN201 - padnet_dist.data.manifest.Manifest (imported lazily with the writer)
    """Convert dataset ``name`` with its typed ``options`` (the converter's ``OPTIONS``) into shards and the
    manifest ``{out_url}/{options.split}.manifest.json``; returns the manifest. Shards already complete are kept
    (``padnet_dist.data.writer.write_shards`` says how the other arguments shape the shards)."""
    from padnet_dist.data.writer import write_shards

    conversion = get_converter(name).plan(options)
    if progress:
        print(f"converting {conversion.source} -> {out_url}", file=sys.stderr)
    return write_shards(
        conversion.jobs,
        conversion.load,
        out_url=out_url,
        split=options.split,
        info=conversion.info,
        storage_cfg=storage_cfg,
        samples_per_shard=samples_per_shard,
        target_shard_bytes=target_shard_bytes,
        num_workers=num_workers,
        rgb_format=rgb_format,
        progress=progress,
    )
