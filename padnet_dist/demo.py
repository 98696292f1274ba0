"""`make demo`: the main path end to end, through the coordinator, on this machine.

Synthetic shards in a local directory (written once), then ``padnet-dist pipeline --backend local`` on
``configs/demo.yaml``: data check, phase 1 (front end + scene parsing) and phase 2 (the whole network, from phase 1)
on two local CPU ranks, the evaluation of each phase on the held-out split, and the report. The last line printed is
``report: <path of report.html>``. Re-running continues the run from ``runs/demo/run/pipeline.json``: finished jobs
are kept, so a second ``make demo`` only re-prints the report's path.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from padnet_dist.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "demo.yaml")
OUT = ROOT / "runs" / "demo"
HEIGHT, WIDTH = 120, 160


def _step(title: str, argv: list[str]) -> None:
    print(f"\n== {title}\n$ padnet-dist {' '.join(argv)}", flush=True)
    start = time.monotonic()
    code = cli(argv)
    if code:
        print(f"demo: '{title}' ended with exit code {code}", file=sys.stderr)
        sys.exit(code)
    print(f"-- {title}: {time.monotonic() - start:.0f} s", flush=True)


def _shards(split: str, num: int, seed: int, per_shard: int, out: Path) -> None:
    if (out / f"{split}.manifest.json").exists():  # the manifest is written last: the split is complete
        print(f"== synthetic shards ({split}): reusing {out / f'{split}.manifest.json'}", flush=True)
        return
    argv = ["shard", "synthetic", "--num", str(num), "--height", str(HEIGHT), "--width", str(WIDTH), "--seed",
            str(seed), "--scene", "room", "--split", split, "--out", str(out), "--samples-per-shard", str(per_shard)]  # fmt: skip
    _step(f"synthetic shards ({split})", argv)


def _summary(run_dir: Path) -> list[str]:
    """The held-out numbers of each phase's final checkpoint, from pipeline.json."""
    jobs = json.loads((run_dir / "pipeline.json").read_text())["jobs"]
    lines = []
    for prefix, model in (("", "PAD-Net"), ("baseline-", "front-end baseline")):
        for phase, outputs in ((1, "after phase 1"), (2, "final")):
            step = jobs.get(f"{prefix}phase{phase}", {}).get("step")
            metrics = jobs.get(f"{prefix}eval-phase{phase}-step-{step or 0:09d}", {}).get("metrics")
            if not metrics:
                continue
            nan = float("nan")
            text = f"{model}, {outputs}: mIoU {metrics.get('semantic', {}).get('miou', nan):.3f}"
            if "depth" in metrics:
                text += f", depth rel {metrics['depth'].get('rel', nan):.3f}"
            lines.append(text)
    return lines


def main() -> None:
    start = time.monotonic()
    shards, run_dir = OUT / "shards", OUT / "run"
    _shards("train", 96, 0, 16, shards)
    _shards("val", 24, 1, 8, shards)
    overrides = [
        f"data.train_manifest={shards}/train.manifest.json",
        f"data.val_manifest={shards}/val.manifest.json",
        f"run.dir={run_dir}",
        "pipeline.poll_every_s=1",
    ]
    _step("the pipeline: data check, phase 1, evaluation, phase 2, evaluation, report (2 local ranks)",
          ["pipeline", "--config", CONFIG, *overrides, "--backend", "local"])  # fmt: skip
    print("\nheld-out synthetic split (the report shows every evaluated checkpoint, curves and panels):")
    for line in _summary(run_dir):
        print(f"  {line}")
    print(f"demo: {time.monotonic() - start:.0f} s; run state, logs, checkpoints under {run_dir}; "
          f"`padnet-dist status {run_dir}` lists the jobs")  # fmt: skip
    print(f"report: {run_dir / 'report.html'}", flush=True)


if __name__ == "__main__":
    main()
