"""Builders and services the tests share. Import them as ``from tests.helpers.<module> import name`` (the
repository root is on ``sys.path`` through pytest's ``pythonpath``), never by a bare module name.

Modules: ``raw_datasets`` (tiny Cityscapes / NYUD-v2 source trees and reading shards back), ``shards`` (small
shard sets and data configs for loader tests), ``tiny_run`` (synthetic shards and overrides for training tests),
``checkpoint`` (a committed inference checkpoint), ``cityscapes_gt`` (ground-truth files for the official
evaluator), ``s3`` (the throwaway ``moto_server`` endpoint and per-test buckets).
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository root: the one place tests derive it."""
