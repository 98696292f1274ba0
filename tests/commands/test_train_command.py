"""``padnet-dist train`` and ``ray-train``: cheap input checks come before any rank, process group or Ray."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

# Runs the command in a fresh interpreter and reports what it started: an exit code, and whether the process
# group, DeepSpeed, elastic's process start or Ray was ever imported or initialised.
PROBE = """
import json, sys
from padnet_dist.cli import main
rc = main(sys.argv[1:])
import torch.distributed as dist
print(json.dumps({
    "rc": rc,
    "group": dist.is_available() and dist.is_initialized(),
    "heavy": sorted(m for m in ("deepspeed", "ray", "torch.distributed.elastic.multiprocessing") if m in sys.modules),
}))
"""


def _probe(args: list[str], cwd) -> tuple[dict, str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.mark.parametrize(
    "command", [["train", "--nproc", "2"], ["train"], ["ray-train", "--num-workers", "2"]], ids=["nproc", "rank", "ray"]
)
def test_a_missing_manifest_is_one_line_before_anything_starts(tmp_path, command):
    args = [*command, "--config", str(REPO_ROOT / "configs" / "tiny.yaml"), "data.train_manifest=shards/nope.json"]
    seen, err = _probe([*args, f"run.dir={tmp_path / 'run'}"], tmp_path)
    assert seen == {"rc": 2, "group": False, "heavy": []}
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "data.train_manifest=shards/nope.json does not exist" in lines[0] and "padnet-dist shard" in lines[0]


def test_a_run_dir_that_cannot_be_created_is_named(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "afile").write_text("")
    args = [
        "train",
        "--nproc",
        "2",
        f"data.train_manifest={tmp_path / 'manifest.json'}",
        f"run.dir={tmp_path / 'afile' / 'run'}",
    ]
    seen, err = _probe(args, tmp_path)
    assert seen == {"rc": 2, "group": False, "heavy": []}
    assert f"run.dir={tmp_path / 'afile' / 'run'}" in err and "is a file" in err and len(err.strip().splitlines()) == 1
