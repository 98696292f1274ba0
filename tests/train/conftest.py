"""Fixtures for training tests: tiny synthetic shards and a tiny config."""

from __future__ import annotations

import pytest

from padnet_dist.config import load_config
from tests.helpers import REPO_ROOT
from tests.helpers.tiny_run import tiny_overrides, write_tiny_shards


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory) -> str:
    return write_tiny_shards(str(tmp_path_factory.mktemp("shards")))


@pytest.fixture
def tiny_cfg(tiny_manifest, tmp_path):
    def make(*extra: str, run_dir: str | None = None):
        return load_config(
            REPO_ROOT / "configs" / "tiny.yaml", tiny_overrides(tiny_manifest, run_dir or str(tmp_path / "run"), *extra)
        )

    return make


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP's spinning threads slow training 10-50x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
