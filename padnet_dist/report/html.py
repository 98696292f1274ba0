"""report.json's content as one self-contained HTML page: inline CSS, no script, images by relative links only.

The page opens from ``file://`` and from a bucket (an object store serving the files) alike: every ``src``/``href``
is a relative path below the page's own folder (``report_files/...``), every value is HTML-escaped.
"""

from __future__ import annotations

import datetime
import html
import math
from typing import Any

from padnet_dist.eval.report import HEADLINE_METRICS

# columns beyond the paper's headline numbers: (section, key, label, lower_is_better)
_EXTRA_COLUMNS = (
    ("normals", "mean", "normals mean (deg)", True),
    ("contour", "f_score", "contour F", False),
)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
tr.baseline td { color: #666; font-style: italic; }
figure { margin: 0.5em 0 1.5em; } figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; image-rendering: pixelated; } .note { color: #a05a00; } code { font-size: 0.9em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return _e(value)


def _columns(metric_dicts: list[dict[str, Any]]) -> list[tuple[str, str, str, bool]]:
    """The metric columns any of the dicts has, in the paper's order."""
    columns = []
    for section, key, label, lower in (*HEADLINE_METRICS, *_EXTRA_COLUMNS):
        if any(isinstance(m.get(section), dict) and key in m[section] for m in metric_dicts):
            unit = next((m["depth"].get("unit") for m in metric_dicts if "depth" in m), "m")
            label = f"rms ({unit})" if (section, key) == ("depth", "rms") else label
            columns.append((section, key, label, lower))
    return columns


def _metric_rows(report: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], bool]]:
    """(model, checkpoint, metrics, is_baseline) for every evaluation of the run, its front-end baseline run and
    the trivial baselines."""
    rows = []
    for label, run in (("PAD-Net", report), ("front end (baseline run)", report.get("frontend_baseline") or {})):
        for phase in ("phase1", "phase2"):
            for ev in (run.get(phase) or {}).get("evaluations", []):
                where = f"{phase} step {ev['step']}" + (" (in training)" if ev["source"] == "training" else "")
                rows.append((label, where, ev["metrics"], label != "PAD-Net"))
    baselines = report.get("baselines") or {}
    if baselines.get("metrics"):
        cls = baselines.get("majority_class_name", baselines.get("majority_class"))
        mean = baselines.get("train_mean_depth")
        unit = (baselines["metrics"].get("depth") or {}).get("unit", "")
        rows.append(
            (
                f"constant: class '{cls}', depth {_fmt(mean)} {unit}",
                "majority class, mean depth of the training split",
                baselines["metrics"],
                True,
            )
        )
    return rows


def _metrics_table(report: dict[str, Any]) -> str:
    rows = _metric_rows(report)
    if not rows:
        return "<p>No evaluated checkpoint yet.</p>"
    columns = _columns([m for _, _, m, _ in rows])
    head = "".join(f"<th>{_e(label)} {'&darr;' if lower else '&uarr;'}</th>" for _, _, label, lower in columns)
    out = [f"<table><tr><th class='l'>model</th><th class='l'>checkpoint</th><th>samples</th>{head}</tr>"]
    for model, where, metrics, is_baseline in rows:
        cells = "".join(f"<td>{_fmt((metrics.get(s) or {}).get(k))}</td>" for s, k, _, _ in columns)
        css = " class='baseline'" if is_baseline else ""
        out.append(
            f"<tr{css}><td class='l'>{_e(model)}</td><td class='l'>{_e(where)}</td>"
            f"<td>{_fmt(metrics.get('num_samples'))}</td>{cells}</tr>"
        )
    out.append(
        "</table><p>&darr; lower is better, &uarr; higher is better. Depth pooled over all valid pixels of the split. "
        "Phase 1 is scored on what it trains (PAD-Net: the intermediate scene-parsing head; its decoders are "
        "untrained), phase 2 on the final outputs. Grey rows are baselines.</p>"
    )
    return "\n".join(out)


def _per_class_table(report: dict[str, Any]) -> str:
    """IoU per class of each phase's final evaluation and of the majority-class baseline."""
    rows = [(f"PAD-Net {p} (final)", (report.get(p) or {}).get("final")) for p in ("phase1", "phase2")]
    rows.append(("majority class", (report.get("baselines") or {}).get("metrics")))
    rows = [(label, (m.get("semantic") or {}).get("iou")) for label, m in rows if m]
    rows = [(label, iou) for label, iou in rows if isinstance(iou, dict) and iou]
    if not rows:
        return ""
    names = list(rows[-1][1])
    out = ["<table><tr><th class='l'>IoU per class</th>" + "".join(f"<th>{_e(n)}</th>" for n in names) + "</tr>"]
    for label, iou in rows:
        cells = "".join(f"<td>{_fmt(iou.get(n))}</td>" for n in names)
        out.append(f"<tr><td class='l'>{_e(label)}</td>{cells}</tr>")
    return "\n".join(out) + "</table>"


def _summary(report: dict[str, Any]) -> str:
    lines = []
    best = report.get("best") or {}
    if best.get("value") is not None:
        lines.append(
            f"<li>best checkpoint by <code>{_e(best.get('metric'))}</code>: {_fmt(best.get('value'))} "
            f"(phase {_e(best.get('phase'))}, <code>{_e(best.get('checkpoint'))}</code>)</li>"
        )
    baselines = report.get("baselines") or {}
    for phase in ("phase2", "phase1"):
        final = (report.get(phase) or {}).get("final")
        if final:
            miou = (final.get("semantic") or {}).get("miou")
            rel = (final.get("depth") or {}).get("rel")
            lines.append(
                f"<li>final {phase}: mIoU {_fmt(miou)} (majority-class baseline "
                f"{_fmt(baselines.get('majority_class_miou'))}), depth rel {_fmt(rel)} "
                f"(mean-depth baseline {_fmt(baselines.get('mean_depth_rel'))})</li>"
            )
            break
    frontend = report.get("frontend_baseline") or {}
    for phase in ("phase2", "phase1"):
        final = (frontend.get(phase) or {}).get("final")
        if final:
            miou = (final.get("semantic") or {}).get("miou")
            rel = (final.get("depth") or {}).get("rel")
            lines.append(f"<li>front-end baseline run, final {phase}: mIoU {_fmt(miou)}, depth rel {_fmt(rel)}</li>")
            break
    for note in report.get("notes", []):
        lines.append(f"<li class='note'>{_e(note)}</li>")
    return f"<ul>{''.join(lines)}</ul>" if lines else ""


def _training(report: dict[str, Any]) -> str:
    out = []
    for run_label, run in (("PAD-Net", report), ("front-end baseline run", report.get("frontend_baseline") or {})):
        for phase in ("phase1", "phase2"):
            section = run.get(phase) or {}
            training, images = section.get("training") or {}, section.get("images") or {}
            if not training and not images:
                continue
            out.append(f"<h3>{_e(run_label)}, {phase}</h3>")
            if training:
                out.append(f"<p>{_training_line(training)}</p>")
            for kind, caption in (("losses", "every loss term"), ("throughput", "throughput and data wait")):
                if kind in images:
                    src = _e(images[kind])
                    out.append(
                        f"<figure><img src='{src}' alt='{_e(caption)}'><figcaption>{caption}</figcaption></figure>"
                    )
    return "\n".join(out) or "<p>No per-step records.</p>"


def _training_line(training: dict[str, Any]) -> str:
    rate, wait, wall = (training.get(k) for k in ("median_samples_per_s", "data_wait_share", "wall_s"))
    ranks = training.get("num_ranks")
    parts = [f"{_fmt(training.get('last_step'))} steps on {_fmt(ranks)} rank{'s' if ranks != 1 else ''}"]
    if isinstance(wall, (int, float)):
        parts.append(
            f"{wall / 60:.1f} min between the first and last record"
            if wall >= 120
            else f"{wall:.1f} s between the first and last record"
        )
    if isinstance(rate, (int, float)):
        parts.append(f"median {rate:.1f} samples/s over all ranks")
    if isinstance(wait, (int, float)):
        parts.append(f"data wait {100 * wait:.1f}% of the step time")
    return _e("; ".join(parts)) + "."


def _panels(report: dict[str, Any]) -> str:
    out = []
    for group in report.get("panels", []):
        out.append(f"<h3>{_e(group['model'])} <small><code>{_e(group['checkpoint'])}</code></small></h3>")
        for panel in group["panels"]:
            caption = f"{panel['key']}, {panel['task']}: " + " | ".join(panel["columns"])
            out.append(
                f"<figure><img src='{_e(panel['file'])}' alt='{_e(caption)}'><figcaption>{_e(caption)}"
                "</figcaption></figure>"
            )
    return "\n".join(out) or "<p>No committed checkpoint or no validation split to show.</p>"


def _duration(job: dict[str, Any]) -> str:
    start, end = job.get("started_at"), job.get("ended_at")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):
        seconds = end - start
        return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"
    return "n/a"


def _jobs(report: dict[str, Any]) -> str:
    jobs = report.get("jobs")
    if not isinstance(jobs, dict) or not jobs:
        return "<p>No pipeline.json: the phases were run without the coordinator.</p>"
    out = [
        "<table><tr><th class='l'>job</th><th class='l'>state</th><th class='l'>backend id</th><th>attempts</th>"
        "<th>duration</th><th>exit code</th><th class='l'>log</th></tr>"
    ]

    def started(item: tuple[str, Any]) -> float:
        start = item[1].get("started_at") if isinstance(item[1], dict) else None
        return start if isinstance(start, (int, float)) else math.inf  # not started yet: last

    for name, job in sorted(jobs.items(), key=started):
        job = job if isinstance(job, dict) else {}
        out.append(
            f"<tr><td class='l'>{_e(name)}</td><td class='l'>{_e(job.get('state', '?'))}</td>"
            f"<td class='l'>{_e(job.get('backend_id', ''))}</td><td>{_fmt(job.get('attempts'))}</td>"
            f"<td>{_duration(job)}</td><td>{_fmt(job.get('exit_code'))}</td>"
            f"<td class='l'><code>{_e(job.get('log', ''))}</code></td></tr>"
        )
    return "\n".join(out) + "</table>"


def render_html(report: dict[str, Any]) -> str:
    """The page for ``report`` (report.json's dict, with ``images`` and ``panels`` holding relative file paths)."""
    when = datetime.datetime.fromtimestamp(report.get("generated_at", 0), datetime.timezone.utc)
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>PAD-Net run report: {_e(report['run_dir'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>PAD-Net run report</h1><p>run <code>{_e(report['run_dir'])}</code>, written "
        f"{when:%Y-%m-%d %H:%M} UTC; numbers in <a href='report.json'>report.json</a>.</p>",
        _summary(report),
        "<h2>Evaluated checkpoints</h2>",
        _metrics_table(report),
        _per_class_table(report),
        "<h2>Training</h2>",
        _training(report),
        "<h2>Examples from the validation split</h2>",
        _panels(report),
        "<h2>Jobs</h2>",
        _jobs(report),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"
