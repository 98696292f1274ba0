"""``padnet-dist report`` on a real tiny run: both phases trained and evaluated, a front-end baseline run nested in
``baseline/``, then the report on local disk and on S3 (moto)."""

from __future__ import annotations

import json
import os
import tarfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from padnet_dist.cli import main
from tests.helpers import REPO_ROOT
from tests.helpers.checkpoint import write_checkpoint
from tests.helpers.tiny_run import tiny_overrides, write_tiny_shards

TINY = str(REPO_ROOT / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict[str, str]:
    """Phase 1 and 2 of a tiny PAD-Net (checkpoint every 2 steps, so phase 1 has two evaluated checkpoints), each
    final checkpoint scored by ``padnet-dist eval``, and a phase-1 front-end baseline in ``{run}/baseline``.
    One torch thread: the machine's cores are shared."""
    from padnet_dist.config import load_config
    from padnet_dist.launch.env import free_port
    from padnet_dist.train import train
    from padnet_dist.world import World

    root = tmp_path_factory.mktemp("report")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_manifest = write_tiny_shards(str(root / "shards"), num=8)
        val_manifest = write_tiny_shards(str(root / "shards"), num=3, split="val")
        run_dir = str(root / "run")
        common = [f"data.val_manifest={val_manifest}", "run.checkpoint_every_steps=2", "run.keep_last=5"]
        for phase in (1, 2):
            cfg = load_config(TINY, tiny_overrides(train_manifest, run_dir, *common, f"phase={phase}"))
            summary = train(cfg, World(master_port=free_port()))
            assert main(["eval", "--checkpoint", summary["checkpoint"]]) == 0
        # the front-end baseline run: a committed (untrained) checkpoint with its in-training evaluation file, which
        # is what the report reads of it; training it too would only slow the test
        cfg = load_config(TINY, tiny_overrides(train_manifest, run_dir, *common, "model.variant=frontend"))
        baseline_ckpt = write_checkpoint(os.path.join(run_dir, "baseline"), cfg, step=4, phase=1)
        assert main(["eval", "--checkpoint", baseline_ckpt]) == 0
        eval_dir = root / "run" / "baseline" / "phase1" / "eval"
        eval_dir.mkdir()
        os.replace(os.path.join(baseline_ckpt, "metrics.json"), eval_dir / "step-000000004.json")
        # an intermediate checkpoint scored too: the report lists every evaluated checkpoint
        first = sorted((root / "run" / "phase1" / "checkpoints").iterdir())[0]
        assert main(["eval", "--checkpoint", str(first)]) == 0
    finally:
        torch.set_num_threads(before)
    return {"root": str(root), "run": run_dir, "train": train_manifest, "val": val_manifest}


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href") and v]


def _links(html_text: str) -> list[str]:
    parser = _Links()
    parser.feed(html_text)
    return parser.links


def _assert_relative_links_exist(html_text: str, exists) -> list[str]:
    links = _links(html_text)
    assert links
    for link in links:
        assert "://" not in link and not link.startswith(("/", "..")), link
        assert exists(link), f"report.html links {link}, which was not written"
    return links


def _decoded(manifest_url: str) -> list[dict]:
    """Every sample of a split, read straight from its tar files (no loader)."""
    from padnet_dist.data.format import decode_sample

    manifest = json.loads(Path(manifest_url).read_text())
    samples = []
    for shard in manifest["shards"]:
        members: dict[str, dict[str, bytes]] = {}
        with tarfile.open(Path(manifest_url).parent / shard["name"]) as tar:
            for info in tar.getmembers():
                key, _, suffix = info.name.partition(".")
                members.setdefault(key, {})[suffix] = tar.extractfile(info).read()
        samples += [decode_sample(m, k) for k, m in members.items()]
    return samples


def _numpy_baselines(train_manifest: str, val_manifest: str, num_classes: int = 8) -> tuple[int, float, float, float]:
    """(majority class, training mean depth, its mIoU and its depth rel on the val split), computed directly."""
    train = _decoded(train_manifest)
    labels = np.concatenate([s["semantic"].ravel() for s in train]).astype(np.int64)
    counts = np.bincount(labels[labels != 255], minlength=num_classes)
    majority = int(np.argmax(counts))
    depths = np.concatenate([s["depth"].ravel() for s in train]).astype(np.float64)
    mean_depth = float(depths[depths > 0].mean())
    val = _decoded(val_manifest)
    gt = np.concatenate([s["semantic"].ravel() for s in val]).astype(np.int64)
    gt = gt[gt != 255]
    ious = []
    for c in range(num_classes):
        tp = int(((gt == c) & (c == majority)).sum())
        union = int((gt == c).sum()) + (gt.size if c == majority else 0) - tp
        if union:
            ious.append(tp / union)
    gt_depth = np.concatenate([s["depth"].ravel() for s in val]).astype(np.float64)
    gt_depth = gt_depth[gt_depth > 0]
    pred = float(np.float32(mean_depth))  # predictions are float32, as every network output
    rel = float(np.mean(np.abs(pred - gt_depth) / gt_depth))
    return majority, mean_depth, float(np.mean(ious)), rel


@pytest.mark.slow
def test_report_of_a_local_run(tiny_run, capsys):
    run = Path(tiny_run["run"])
    pipeline = {
        "version": 1,
        "jobs": {
            "phase1": {
                "state": "succeeded",
                "backend_id": "4242",
                "attempts": 1,
                "started_at": 100.0,
                "ended_at": 160.0,
                "exit_code": 0,
                "log": "logs/phase1.log",
            },  # fmt: skip
            "report": {"state": "running", "backend_id": "4243", "attempts": 1, "started_at": 170.0},
            # evaluations of checkpoints pruned since: only the coordinator's record keeps their numbers
            "eval-phase1-step-000000001": {
                "kind": "eval",
                "state": "succeeded",
                "phase": 1,
                "step": 1,
                "checkpoint": str(run / "phase1/checkpoints/step-000000001"),
                "metrics": {"dataset": "synthetic", "semantic": {"miou": 0.125}},
            },
            "baseline-eval-phase1-step-000000003": {
                "kind": "eval",
                "state": "succeeded",
                "phase": 1,
                "step": 3,
                "checkpoint": str(run / "baseline/phase1/checkpoints/step-000000003"),
                "metrics": {"dataset": "synthetic", "semantic": {"miou": 0.25}},
            },
        },
        "best": {"metric": "semantic.miou", "value": 0.5, "phase": 1, "checkpoint": "phase1/checkpoints/x"},
    }
    (run / "pipeline.json").write_text(json.dumps(pipeline))
    try:
        assert main(["report", str(run), "--num-panels", "2"]) == 0
    finally:
        (run / "pipeline.json").unlink()
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"report: {run / 'report.html'}"
    report = json.loads((run / "report.json").read_text())

    # every evaluated checkpoint, with the numbers of the metrics.json it came from
    steps = {p: [e["step"] for e in report[p]["evaluations"]] for p in ("phase1", "phase2")}
    assert steps["phase1"] == [1, 2, 4] and steps["phase2"] == [4]
    recorded = report["phase1"]["evaluations"][0]
    assert recorded["source"] == "pipeline.json"
    assert recorded["metrics"] == pipeline["jobs"]["eval-phase1-step-000000001"]["metrics"]
    for phase in ("phase1", "phase2"):
        for ev in report[phase]["evaluations"][phase == "phase1" :]:
            source = json.loads(Path(ev["url"]).read_text())
            assert ev["metrics"] == source
        assert report[phase]["final"] == report[phase]["evaluations"][-1]["metrics"]
    # where `padnet-dist eval` scored a checkpoint its metrics.json is shown, not the in-training score of the step
    assert [e["source"] for e in report["phase1"]["evaluations"]] == ["pipeline.json", "eval", "eval"]
    assert [e["source"] for e in report["phase2"]["evaluations"]] == ["eval"]
    final = report["phase2"]["final"]
    assert set(final["depth"]) >= {"rel", "log10", "rms", "delta1", "delta2", "delta3"}
    assert set(final["semantic"]) >= {"miou", "mean_acc", "pixel_acc"}
    assert report["best"] == {**pipeline["best"], "source": "pipeline.json"}
    assert report["jobs"] == pipeline["jobs"]

    # the trivial baselines on the evaluation's split, against a direct computation from the tar files
    majority, mean_depth, miou, rel = _numpy_baselines(tiny_run["train"], tiny_run["val"])
    b = report["baselines"]
    assert b["split_manifest"] == final["split_manifest"] == tiny_run["val"]
    assert b["majority_class"] == majority
    # float64 sums in another order: equal to ~1e-15 relative over ~1e5 pixels; 1e-12 leaves room
    assert b["train_mean_depth"] == pytest.approx(mean_depth, rel=1e-12)
    assert b["majority_class_miou"] == pytest.approx(miou, rel=1e-12)
    assert b["mean_depth_rel"] == pytest.approx(rel, rel=1e-12)
    assert b["metrics"]["num_samples"] == 3 and b["metrics"]["semantic"]["miou"] == b["majority_class_miou"]

    # the front-end baseline run beside PAD-Net
    frontend = report["frontend_baseline"]
    assert frontend["run_dir"] == str(run / "baseline")
    pruned, final = frontend["phase1"]["evaluations"]
    assert (pruned["step"], pruned["source"], pruned["metrics"]["semantic"]["miou"]) == (3, "pipeline.json", 0.25)
    assert final["source"] == "training" and final["url"] == str(run / "baseline/phase1/eval/step-000000004.json")
    assert frontend["phase1"]["final"] == json.loads(Path(final["url"]).read_text())

    # training curves and panels: files beside the page, linked relatively
    assert report["phase1"]["training"]["last_step"] == 4 and report["phase1"]["training"]["num_ranks"] == 1
    assert set(report["phase2"]["training"]["final_losses"]) >= {"total", "final_depth", "final_semantic"}
    html_text = (run / "report.html").read_text()
    links = _assert_relative_links_exist(html_text, lambda link: (run / link).is_file())
    images = {link for link in links if link.endswith(".png")}
    assert {report[p]["images"][k] for p in ("phase1", "phase2") for k in ("losses", "throughput")} <= images
    groups = {g["model"]: g for g in report["panels"]}
    assert set(groups) == {
        "PAD-Net, phase 1 (final)",
        "PAD-Net, phase 2 (final)",
        "front-end baseline, phase 1 (final)",
    }
    phase2_panels = groups["PAD-Net, phase 2 (final)"]["panels"]
    assert {(p["task"], tuple(p["columns"])) for p in phase2_panels} == {
        ("semantic", ("RGB", "ground truth", "inter_semantic", "final_semantic")),
        ("depth", ("RGB", "ground truth", "inter_depth", "final_depth")),
    }
    assert len(phase2_panels) == 2 * 2  # two validation samples
    assert {p["file"] for g in report["panels"] for p in g["panels"]} <= images
    assert "4242" in html_text and "logs/phase1.log" in html_text  # the job table
    assert not [n for n in os.listdir(run) if ".tmp" in n]

    # a second report reuses the baselines of the same inputs instead of reading the training split again
    shards = sorted(Path(tiny_run["train"]).parent.glob("train-*.tar"))
    for tar in shards:
        tar.rename(tar.with_suffix(".away"))
    try:
        assert main(["report", str(run), "--num-panels", "0"]) == 0
    finally:
        for tar in shards:
            tar.with_suffix(".away").rename(tar)
    assert json.loads((run / "report.json").read_text())["baselines"] == b


@pytest.mark.slow
@pytest.mark.integration
def test_report_of_a_run_on_s3(tiny_run, s3, capsys):
    from padnet_dist.storage import storage_for

    storage = storage_for(s3.url(), s3.storage_cfg)
    run = Path(tiny_run["run"])
    for path in sorted(p for p in run.rglob("*") if p.is_file() and "engine" not in p.parts):
        if not path.name.startswith("report"):
            storage.write_bytes(s3.url(f"run/{path.relative_to(run).as_posix()}"), path.read_bytes())
    run_url = s3.url("run")
    # the run dir and the overrides in any order
    assert main(["report", f"storage.endpoint_url={s3.endpoint_url}", run_url, "--num-panels", "1"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"report: {run_url}/report.html"
    report = json.loads(storage.read_bytes(f"{run_url}/report.json"))
    assert report["run_dir"] == run_url
    assert [e["url"] for e in report["phase2"]["evaluations"]][-1].startswith(run_url + "/phase2/checkpoints/")
    assert report["phase2"]["final"] == json.loads(storage.read_bytes(report["phase2"]["evaluations"][-1]["url"]))
    assert report["baselines"]["majority_class_miou"] is not None
    html_text = storage.read_bytes(f"{run_url}/report.html").decode()
    links = _assert_relative_links_exist(html_text, lambda link: storage.exists(f"{run_url}/{link}"))
    # a browser renders the page and its images from the bucket only when they carry their content types
    image = next(link for link in links if link.endswith(".png"))
    for name, content_type in (("report.html", "text/html"), (image, "image/png"), ("report.json", "application/json")):
        head = s3.client().head_object(Bucket=s3.bucket, Key=f"run/{name}")
        assert head["ContentType"].split(";")[0] == content_type


def test_report_of_a_directory_without_a_run_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds no training records" in err and len(err.splitlines()) == 1


def test_report_reads_torn_lines_and_unknown_record_keys(tmp_path):
    """A crash leaves a torn last line; a newer trainer may log more keys (e.g. MFU): the summary still holds."""
    from padnet_dist.report.plots import loss_plot, throughput_plot, training_summary
    from padnet_dist.report.records import read_run

    logs = tmp_path / "run" / "phase1" / "logs"
    logs.mkdir(parents=True)
    for rank in (0, 1):
        lines = [
            json.dumps(
                {
                    "step": s,
                    "epoch": 0,
                    "total": 2.0 / s,
                    "inter_semantic": 1.0 / s,
                    "lr": 1e-3,
                    "mfu": 0.4,
                    "samples_per_s": 4.0,
                    "data_wait_s": 0.1,
                    "compute_s": 0.9,
                    "time": 1000.0 + s,
                }
            )  # fmt: skip
            for s in (1, 2, 3)
        ]
        (logs / f"rank{rank}.jsonl").write_text("\n".join(lines) + '\n{"step": 4, "tot')
    run = read_run(str(tmp_path / "run"))
    records = run.phases[1].rank_records
    assert sorted(records) == [0, 1] and [r["step"] for r in records[0]] == [1, 2, 3]
    summary = training_summary(records)
    assert summary["final_losses"] == {"total": 2.0 / 3, "inter_semantic": 1.0 / 3}  # no "mfu", no "lr"
    assert summary["median_samples_per_s"] == 8.0 and summary["data_wait_share"] == pytest.approx(0.1)
    assert summary["last_step"] == 3 and summary["num_ranks"] == 2 and summary["wall_s"] == 2.0
    for plot in (loss_plot, throughput_plot):
        assert plot(records, "t").startswith(b"\x89PNG")
