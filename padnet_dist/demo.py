"""`make demo`: the main job end to end on the embedded default.

Synthetic shards in a local directory, two local CPU ranks, phase 1 (front end + scene parsing), phase 2
(the whole network, initialised from phase 1), then evaluation. Re-running resumes: finished shards and
committed checkpoints are reused.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from padnet_dist.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "demo.yaml")
OUT = ROOT / "runs" / "demo"


def _step(title: str, argv: list[str]) -> None:
    print(f"\n== {title}\n$ padnet-dist {' '.join(argv)}", flush=True)
    start = time.monotonic()
    code = cli(argv)
    if code:
        print(f"demo: '{title}' failed with exit code {code}", file=sys.stderr)
        sys.exit(code)
    print(f"-- {title}: {time.monotonic() - start:.0f} s", flush=True)


def main() -> None:
    shards = OUT / "shards"
    run_dir = OUT / "run"
    common = [f"data.train_manifest={shards}/train.manifest.json", f"data.val_manifest={shards}/val.manifest.json"]
    common.append(f"run.dir={run_dir}")
    _step(
        "synthetic shards (train)",
        [
            "shard",
            "synthetic",
            "--num",
            "96",
            "--height",
            "120",
            "--width",
            "160",
            "--seed",
            "0",
            "--split",
            "train",
            "--out",
            str(shards),
            "--samples-per-shard",
            "16",
        ],
    )
    _step(
        "synthetic shards (val)",
        [
            "shard",
            "synthetic",
            "--num",
            "24",
            "--height",
            "120",
            "--width",
            "160",
            "--seed",
            "1",
            "--split",
            "val",
            "--out",
            str(shards),
            "--samples-per-shard",
            "8",
        ],
    )
    _step(
        "phase 1: front end + scene parsing, 2 ranks", ["train", "--config", CONFIG, "--nproc", "2", "phase=1", *common]
    )
    _step("phase 2: the whole network, 2 ranks", ["train", "--config", CONFIG, "--nproc", "2", "phase=2", *common])
    _step("evaluation", ["eval", "--config", CONFIG, "--checkpoint", str(run_dir / "phase2"), *common])
    print(f"\ndemo done: checkpoints, logs and metrics under {run_dir}")


if __name__ == "__main__":
    main()
