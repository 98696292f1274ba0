"""Dataset converters: one module per dataset, chosen by name from an explicit registry.

A converter module exposes
    ``SUMMARY``  one line for the command's help;
    ``add_arguments(parser)``  its dataset-specific options of ``padnet-dist shard <name>``;
    ``plan(args) -> Conversion`` checks the inputs cheaply (files present, splits known) and lists the jobs.
``Conversion.jobs`` are small picklable descriptors and ``Conversion.load(job) -> sample dict`` (a module-level
function or ``functools.partial``) turns one into a sample (docs/contracts.md) inside a writer worker.
Modules are imported only when asked for, so listing the registry imports nothing heavy (h5py, scipy).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

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
