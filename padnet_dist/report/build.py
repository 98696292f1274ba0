"""The run report: ``write_report(run_dir)`` writes ``report.html``, ``report.json`` and ``report_files/*.png``.

report.json (strict JSON, the numbers the page shows)::

    {"version": 1, "run_dir", "generated_at" (unix s),
     "phase1"/"phase2": {"evaluations": [{"step", "source" ("eval" | "pipeline.json" | "training"), "url", "metrics"}],
                         "final": metrics of the newest evaluation | null, "final_step", "checkpoints": [url],
                         "training": {num_ranks, last_step, wall_s, median_samples_per_s, data_wait_share,
                                      final_losses: {term: value}},
                         "images": {"losses", "throughput": relative path}},
     "best": {"metric", "value", "phase", "step", "checkpoint", "source" ("pipeline.json" | "report")} | {},
     "baselines": {"majority_class_miou", "mean_depth_rel", "majority_class", "majority_class_name",
                   "train_mean_depth", "depth_target", "train_manifest", "split_manifest", "metrics"},
     "frontend_baseline": {"run_dir", "phase1", "phase2", "best"}   (only when {run_dir}/baseline/ has records),
     "jobs": pipeline.json's "jobs" | null,
     "phase1_from": pipeline.json's "phase1_from" (only for a run whose phase 1 was trained by another run: its
                    "phase1" section is that run's phase 1),
     "panels": [{"model", "checkpoint", "panels": [{"file", "task", "key", "columns"}]}],
     "notes": [why something is missing]}

``metrics`` are the dicts ``padnet-dist eval`` writes (``metrics.json``, ``eval/step-*.json``), copied verbatim.
Every file is written through the storage layer, each atomically; the images first, then report.json, then
report.html, so a page that exists never links a missing image.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from padnet_dist.config import Config, StorageConfig
from padnet_dist.errors import UserError
from padnet_dist.report.records import RunRecords, read_run
from padnet_dist.storage import join_url, storage_for

FILES_DIR = "report_files"
# metric keys (section.KEY) where smaller is better, as the coordinator ranks them; any other is higher-is-better
LOWER_IS_BETTER = frozenset({"rel", "log10", "rms", "mean", "median"})
NUM_PANEL_SAMPLES = 3


def _phase_section(run: RunRecords, phase: int) -> dict[str, Any]:
    from padnet_dist.report.plots import training_summary

    records = run.phases[phase]
    evaluations = [
        {"step": e.step, "source": e.source, "url": e.url, "metrics": e.metrics} for e in records.evaluations
    ]
    return {
        "evaluations": evaluations,
        "final": evaluations[-1]["metrics"] if evaluations else None,
        "final_step": evaluations[-1]["step"] if evaluations else None,
        "checkpoints": [url for _, url in records.checkpoints],
        "training": training_summary(records.rank_records),
        "images": {},
    }


def _metric_value(metrics: dict[str, Any], metric: str) -> float | None:
    section, _, key = metric.partition(".")
    value = (metrics.get(section) or {}).get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def best_evaluation(run: RunRecords, metric: str) -> dict[str, Any]:
    """pipeline.json's ``best`` when the coordinator recorded one, else the evaluation of any phase with the best
    ``metric`` (``section.key``; lower is better for depth errors and normal angles); ``{}`` when none has it."""
    recorded = (run.pipeline or {}).get("best")
    if isinstance(recorded, dict) and recorded.get("value") is not None:
        return {**recorded, "source": "pipeline.json"}
    lower = metric.partition(".")[2] in LOWER_IS_BETTER
    best: dict[str, Any] = {}
    for phase in sorted(run.phases):
        for e in run.phases[phase].evaluations:
            value = _metric_value(e.metrics, metric)
            if value is None:
                continue
            if not best or (value < best["value"] if lower else value > best["value"]):
                checkpoint = e.metrics.get("checkpoint") or e.url.rsplit("/", 1)[0]
                best = {"metric": metric, "value": value, "phase": phase, "step": e.step, "checkpoint": checkpoint,
                        "source": "report"}  # fmt: skip
    return best


def _run_sections(run: RunRecords, metric: str) -> dict[str, Any]:
    return {f"phase{p}": _phase_section(run, p) for p in sorted(run.phases)} | {"best": best_evaluation(run, metric)}


def _val_split(run: RunRecords, cfg: Config) -> str:
    """The split the run's evaluations scored (the newest's ``split_manifest``), else ``data.val_manifest``."""
    for phase in sorted(run.phases, reverse=True):
        for e in reversed(run.phases[phase].evaluations):
            if e.metrics.get("split_manifest"):
                return str(e.metrics["split_manifest"])
    return cfg.data.val_manifest


def _newest_checkpoint(run: RunRecords) -> tuple[int, str] | None:
    for phase in sorted(run.phases, reverse=True):
        if run.phases[phase].checkpoints:
            return phase, run.phases[phase].checkpoints[-1][1]
    return None


class _Writer:
    """Writes the report's images below its folder; returns the relative paths report.json and the page use."""

    def __init__(self, out_url: str, storage_cfg: StorageConfig | None) -> None:
        self.out_url = out_url
        self.storage = storage_for(out_url, storage_cfg)

    def image(self, name: str, png: bytes) -> str:
        relative = f"{FILES_DIR}/{name}"
        self.storage.write_bytes(join_url(self.out_url, relative), png)
        return relative


def _plots(report: dict[str, Any], runs: dict[str, RunRecords], writer: _Writer) -> None:
    from padnet_dist.report.plots import loss_plot, throughput_plot

    for label, run in runs.items():
        target = report if label == "padnet" else report["frontend_baseline"]
        title_model = "PAD-Net" if label == "padnet" else "front-end baseline"
        for phase, records in sorted(run.phases.items()):
            images = target[f"phase{phase}"]["images"]
            for kind, plot in (("losses", loss_plot), ("throughput", throughput_plot)):
                png = plot(records.rank_records, f"{title_model}, phase {phase}: {kind}")
                if png is not None:
                    images[kind] = writer.image(f"{label}-phase{phase}-{kind}.png", png)


def _panels(
    report: dict[str, Any], runs: dict[str, RunRecords], cfg: Config, val_manifest: str, writer: _Writer,
    num_samples: int,
) -> None:  # fmt: skip
    from padnet_dist.eval.predict_checkpoint import default_palette
    from padnet_dist.report.panels import checkpoint_panels, validation_samples

    if num_samples == 0:
        return
    samples = validation_samples(cfg.data, cfg.storage, val_manifest, num_samples)
    palette = default_palette(cfg.model.num_classes, val_manifest, cfg.storage)
    padnet = runs["padnet"].phases
    models = [
        (f"PAD-Net, phase {p} (final)", f"padnet-phase{p}", padnet[p].checkpoints[-1][1])
        for p in sorted(padnet)
        if padnet[p].checkpoints
    ]
    if "frontend" in runs and (newest := _newest_checkpoint(runs["frontend"])):
        models.append((f"front-end baseline, phase {newest[0]} (final)", "frontend", newest[1]))
    for model, prefix, checkpoint in models:
        panels = checkpoint_panels(checkpoint, samples, prefix=prefix, palette=palette, storage_cfg=cfg.storage)
        report["panels"].append({
            "model": model, "checkpoint": checkpoint,
            "panels": [{"file": writer.image(p.name, p.png), "task": p.task, "key": p.key, "columns": list(p.columns)}
                       for p in panels],
        })  # fmt: skip


def _baselines(cfg: Config, val_manifest: str, previous_json_url: str) -> dict[str, Any]:
    """The baselines, reused from the previous report.json when they were computed from the same inputs (the
    manifests' bytes and the settings that change the statistics): reading a large training split again would
    make re-running the report slow for nothing."""
    import hashlib

    from padnet_dist.report.baselines import compute_baselines

    digest = hashlib.sha256()
    for url in (cfg.data.train_manifest, val_manifest):
        digest.update(storage_for(url, cfg.storage).read_bytes(url) + b"\0")
    d = cfg.data
    settings = (cfg.model.num_classes, d.depth_target, d.min_depth_m, d.max_depth_m, d.ignore_index)
    digest.update(repr(settings).encode())
    inputs = digest.hexdigest()
    storage = storage_for(previous_json_url, cfg.storage)
    if storage.exists(previous_json_url):
        try:
            previous = json.loads(storage.read_bytes(previous_json_url)).get("baselines") or {}
        except (ValueError, AttributeError):
            previous = {}
        if previous.get("inputs_sha256") == inputs and previous.get("metrics"):
            return previous
    baselines = compute_baselines(
        cfg.data, cfg.storage, train_manifest=d.train_manifest, val_manifest=val_manifest, num_classes=settings[0]
    )
    return baselines | {"inputs_sha256": inputs}


def _borrow_phase1(run: RunRecords, storage_cfg: StorageConfig | None, notes: list[str]) -> dict[str, Any] | None:
    """For a run whose phase 1 another run trained (``pipeline.phase1_from``): that run's phase-1 records in place
    of the empty own ones, and a note saying so; pipeline.json's ``phase1_from`` record, else None."""
    shared = (run.pipeline or {}).get("phase1_from")
    if not isinstance(shared, dict) or not shared.get("run_dir"):
        return None
    notes.append(f"phase 1 was trained by {shared['run_dir']} (shared by the runs that train the same phase 1); "
                 f"phase 2 started from {shared.get('checkpoint') or 'its checkpoint, once ready'}; the phase-1 "
                 "section shows that run's phase 1")  # fmt: skip
    if run.phases[1].empty:
        try:
            run.phases[1] = read_run(shared["run_dir"], storage_cfg).phases[1]
        except UserError as e:
            _note(notes, "shared phase 1", e)
    return shared


def _note(notes: list[str], what: str, error: UserError) -> None:
    """The rest of the report is still worth writing: the reason goes on the page and to stderr."""
    notes.append(f"{what}: {error}")
    print(f"padnet-dist report: warning: {what}: {error}", file=sys.stderr)


def write_report(
    run_dir: str,
    *,
    out_url: str = "",
    storage_cfg: StorageConfig | None = None,
    config_files: Sequence[str] = (),
    overrides: Sequence[str] = (),
    num_panel_samples: int = NUM_PANEL_SAMPLES,
) -> str:
    """Write the report of ``run_dir`` (local or s3://) into ``out_url`` (default: the run dir); return the URL of
    report.html.

    ``storage_cfg`` reaches the run dir; the data settings (training and validation split, loader, storage of the
    shards) are the run's own config with ``config_files`` and ``overrides`` applied, as ``padnet-dist eval`` does.
    What cannot be shown (no validation split, no config file in the run) is said in ``notes``, not raised.
    """
    from padnet_dist.eval.inference import settings_for
    from padnet_dist.eval.report import metrics_to_json
    from padnet_dist.report.html import render_html

    run_dir = run_dir.rstrip("/")
    out_url = (out_url or run_dir).rstrip("/")
    run = read_run(run_dir, storage_cfg)
    notes: list[str] = []
    shared = _borrow_phase1(run, storage_cfg, notes)
    cfg = settings_for(run.config, config_files, overrides) if run.config is not None else None
    metric = cfg.pipeline.best_metric if cfg is not None else "semantic.miou"
    runs = {"padnet": run}
    report: dict[str, Any] = {"version": 1, "run_dir": run_dir, "generated_at": time.time()}
    report |= _run_sections(run, metric)
    if shared:
        report["phase1_from"] = shared
    baseline_dir = join_url(run_dir, "baseline")
    if storage_for(baseline_dir, storage_cfg).list(baseline_dir):
        runs["frontend"] = read_run(baseline_dir, storage_cfg, parent_pipeline=run.pipeline)
        report["frontend_baseline"] = {"run_dir": baseline_dir} | _run_sections(runs["frontend"], metric)
    report["jobs"] = (run.pipeline or {}).get("jobs")
    report["panels"] = []
    writer = _Writer(out_url, storage_cfg)
    _plots(report, runs, writer)
    val_manifest = _val_split(run, cfg) if cfg is not None else ""
    report["baselines"] = {"majority_class_miou": None, "mean_depth_rel": None}
    if cfg is None:
        notes.append("no config.yaml in the run (phase logs or checkpoints): baselines and panels need one")
    elif not val_manifest or not cfg.data.train_manifest:
        notes.append("no validation or training split (data.val_manifest, data.train_manifest): no baselines or panels")
    else:
        try:
            report["baselines"] = _baselines(cfg, val_manifest, join_url(out_url, "report.json"))
        except UserError as e:
            _note(notes, "baselines", e)
        try:
            _panels(report, runs, cfg, val_manifest, writer, num_panel_samples)
        except UserError as e:
            _note(notes, "panels", e)
    report["notes"] = notes
    json_url = join_url(out_url, "report.json")
    writer.storage.write_bytes(json_url, metrics_to_json(report))
    html_url = join_url(out_url, "report.html")
    # the page renders the JSON as written (non-finite numbers as null), so both show the same numbers
    writer.storage.write_bytes(html_url, render_html(json.loads(metrics_to_json(report))).encode())
    return html_url
