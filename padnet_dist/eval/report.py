"""Presenting evaluation results: plain-text tables for people, metrics JSON for programs.

The metrics dict is the one ``padnet_dist.eval.runner.evaluate`` returns: sections ``depth``, ``semantic``,
``normals``, ``contour``, ``cityscapes`` (each optional) of scalars, strings and nested per-class dicts.
``write_metrics_json`` is the one writer of metrics JSON (``{checkpoint}/metrics.json``,
``{phase_dir}/eval/step-*.json``, ``eval-cityscapes --json``): strict JSON, where a value that is not a finite
number (NaN: a class absent from the split, an undefined iIoU; +-inf) is written as ``null``, and written atomically
through the storage layer (local path or s3://).
"""

from __future__ import annotations

import json
import math
from typing import Any

from padnet_dist.storage import storage_for

# (section, key, label, lower_is_better) in the order of the paper's tables (§4.1, Tables 1-5)
_HEADLINE: tuple[tuple[str, str, str, bool], ...] = (
    ("depth", "rel", "rel", True),
    ("depth", "log10", "log10", True),
    ("depth", "rms", "rms (m)", True),
    ("depth", "delta1", "delta < 1.25", False),
    ("depth", "delta2", "delta < 1.25^2", False),
    ("depth", "delta3", "delta < 1.25^3", False),
    ("semantic", "miou", "mean IoU", False),
    ("semantic", "mean_acc", "mean accuracy", False),
    ("semantic", "pixel_acc", "pixel accuracy", False),
    ("cityscapes", "iou_class", "Cityscapes IoU class", False),
    ("cityscapes", "iiou_class", "Cityscapes iIoU class", False),
    ("cityscapes", "iou_category", "Cityscapes IoU category", False),
    ("cityscapes", "iiou_category", "Cityscapes iIoU category", False),
)
HEADLINE_METRICS = _HEADLINE  # for other presenters of the same numbers (the run report)


def json_safe(value: Any) -> Any:
    """Replace NaN/inf by None and tensors/numpy values by Python numbers and lists, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist) and getattr(value, "ndim", 0) > 0:
        return json_safe(value.tolist())
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def metrics_to_json(metrics: dict[str, Any]) -> bytes:
    """Strict JSON (non-finite numbers as null, see ``json_safe``), keys in the order given, trailing newline."""
    return (json.dumps(json_safe(metrics), indent=2, allow_nan=False) + "\n").encode()


def write_metrics_json(url: str, metrics: dict[str, Any], *, storage_cfg=None) -> None:
    """Write ``metrics`` as strict JSON (``metrics_to_json``) to ``url`` (local path or s3://): readers see the
    whole file or none."""
    storage_for(url, storage_cfg).write_bytes(url, metrics_to_json(metrics))


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_table(metrics: dict[str, Any], *, per_class: bool = True) -> str:
    """The headline numbers (and per-class IoU) as an aligned text table."""
    rows: list[tuple[str, str]] = []
    for section, key, label, lower in _HEADLINE:
        if key in metrics.get(section, {}):
            arrow = "lower is better" if lower else "higher is better"
            if section == "depth" and key == "rms":  # in the unit scored (metres, disparity pixels, 1/m)
                label = f"rms ({metrics['depth'].get('unit', 'm')})"
            rows.append((f"{label}  ({arrow})", _fmt(metrics[section][key])))
    for section in ("normals", "contour"):
        for key, value in metrics.get(section, {}).items():
            if isinstance(value, (int, float)):
                rows.append((f"{section} {key}", _fmt(value)))
    if per_class:
        for key, value in (metrics.get("semantic", {}).get("iou") or {}).items():
            rows.append((f"  IoU {key}", _fmt(value)))
    width = max((len(label) for label, _ in rows), default=10)
    lines = [f"evaluated {metrics.get('num_samples', '?')} samples of {metrics.get('dataset', '?')}"]
    depth = metrics.get("depth", {})
    if depth.get("target", "depth") != "depth" or "converted_from" in depth:
        source = f", converted to metres from {depth['converted_from']}" if "converted_from" in depth else ""
        lines.append(f"depth scored as {depth['target']} ({depth.get('unit', '?')}{source})")
    lines += [f"{label:<{width}}  {value}" for label, value in rows]
    for section in ("depth", "semantic", "cityscapes"):
        note = metrics.get(section, {}).get("note")
        if note:
            lines.append(f"note ({section}): {note}")
    return "\n".join(lines)


def _fmt_cityscapes(value: float | None) -> str:
    return "  n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def format_cityscapes_table(result: dict[str, Any]) -> str:
    """``padnet_dist.eval.cityscapes.evaluate_folder``'s result as the official script's tables: classes, then
    categories, each with IoU and iIoU, then the four headline numbers."""
    lines = [f"{'class':<14} {'IoU':>7} {'iIoU':>7}", "-" * 30]
    for name, iou in result["class_iou"].items():
        lines.append(f"{name:<14} {_fmt_cityscapes(iou):>7} {_fmt_cityscapes(result['class_iiou'][name]):>7}")
    lines += ["-" * 30, f"{'category':<14} {'IoU':>7} {'iIoU':>7}", "-" * 30]
    for name, iou in result["category_iou"].items():
        lines.append(f"{name:<14} {_fmt_cityscapes(iou):>7} {_fmt_cityscapes(result['category_iiou'][name]):>7}")
    lines += [
        "-" * 30,
        f"{'IoU class':<16} {_fmt_cityscapes(result['iou_class'])}",
        f"{'iIoU class':<16} {_fmt_cityscapes(result['iiou_class'])}",
        f"{'IoU category':<16} {_fmt_cityscapes(result['iou_category'])}",
        f"{'iIoU category':<16} {_fmt_cityscapes(result['iiou_category'])}",
        f"({result['num_images']} images of gtFine/{result['split']})",
    ]
    return "\n".join(lines)
