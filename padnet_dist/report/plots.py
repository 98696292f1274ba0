"""Training curves as PNG bytes (matplotlib, Agg: no display needed), and the numbers they summarise.

Input is one phase's per-step records per rank (``padnet_dist.train.logging.RunLogger``: step, every loss term,
lr, samples_per_s of that rank, data_wait_s, compute_s, time). Loss terms are the model's output names and
``total``; any other key (fields added to the records later) is ignored here, and a record lacking a key is skipped
for that curve only.
"""

from __future__ import annotations

import io
import math
import statistics
from typing import Any

from padnet_dist.vocabulary import FINAL_TASKS, TASKS

LOSS_TERMS = ("total", *(f"inter_{t}" for t in TASKS), *(f"final_{t}" for t in FINAL_TASKS))


def _number(record: dict[str, Any], key: str) -> float | None:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _by_step(rank_records: dict[int, list[dict[str, Any]]]) -> dict[int, list[dict[str, Any]]]:
    steps: dict[int, list[dict[str, Any]]] = {}
    for records in rank_records.values():
        for record in records:
            steps.setdefault(record["step"], []).append(record)
    return dict(sorted(steps.items()))


def loss_series(rank_records: dict[int, list[dict[str, Any]]]) -> dict[str, tuple[list[int], list[float]]]:
    """term -> (steps, loss averaged over the ranks that logged it at that step)."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for step, records in _by_step(rank_records).items():
        for term in LOSS_TERMS:
            values = [v for r in records if (v := _number(r, term)) is not None]
            if values:
                steps, losses = series.setdefault(term, ([], []))
                steps.append(step)
                losses.append(sum(values) / len(values))
    return series


def throughput_series(rank_records: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """Seconds since the phase's first record, against samples/s summed over ranks (steps every rank logged) and
    each rank's data-wait share (data_wait_s / (data_wait_s + compute_s))."""
    num_ranks = len(rank_records)
    times = [t for recs in rank_records.values() for r in recs if (t := _number(r, "time")) is not None]
    start = min(times) if times else 0.0
    total: tuple[list[float], list[float]] = ([], [])
    for records in _by_step(rank_records).values():
        rates = [v for r in records if (v := _number(r, "samples_per_s")) is not None]
        stamps = [v for r in records if (v := _number(r, "time")) is not None]
        if len(rates) == num_ranks and stamps:
            total[0].append(max(stamps) - start)
            total[1].append(sum(rates))
    wait: dict[int, tuple[list[float], list[float]]] = {}
    for rank, records in sorted(rank_records.items()):
        for r in records:
            t, w, c = _number(r, "time"), _number(r, "data_wait_s"), _number(r, "compute_s")
            if t is not None and w is not None and c is not None and w + c > 0:
                xs, ys = wait.setdefault(rank, ([], []))
                xs.append(t - start)
                ys.append(w / (w + c))
    return {"samples_per_s": total, "data_wait_share": wait}


def training_summary(rank_records: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """Numbers of one phase's training for report.json: steps, ranks, wall time, median samples/s over all ranks,
    data-wait share of the step time over all records, and the last logged value of every loss term."""
    if not rank_records:
        return {}
    flows = throughput_series(rank_records)
    rates = flows["samples_per_s"][1]
    waits = [(w, c) for recs in rank_records.values() for r in recs
             if (w := _number(r, "data_wait_s")) is not None and (c := _number(r, "compute_s")) is not None]  # fmt: skip
    step_s = sum(w + c for w, c in waits)
    times = [t for recs in rank_records.values() for r in recs if (t := _number(r, "time")) is not None]
    losses = loss_series(rank_records)
    return {
        "num_ranks": len(rank_records),
        "last_step": max(r["step"] for recs in rank_records.values() for r in recs),
        "wall_s": (max(times) - min(times)) if times else None,
        "median_samples_per_s": statistics.median(rates) if rates else None,
        "data_wait_share": sum(w for w, _ in waits) / step_s if step_s > 0 else None,
        "final_losses": {term: values[-1] for term, (_, values) in losses.items()},
    }


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes; must precede pyplot's import
    import matplotlib.pyplot as plt

    return plt


def loss_plot(rank_records: dict[int, list[dict[str, Any]]], title: str) -> bytes | None:
    """Every loss term against the step, log scale when all values are positive; None without loss records."""
    series = loss_series(rank_records)
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    for term, (steps, values) in series.items():
        ax.plot(steps, values, label=term, linewidth=2.0 if term == "total" else 1.2)
    if all(v > 0 for _, values in series.values() for v in values):
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="loss (mean over ranks)", title=title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return _png(fig)


def throughput_plot(rank_records: dict[int, list[dict[str, Any]]], title: str) -> bytes | None:
    """Samples/s (all ranks) and each rank's data-wait share against wall time; None without timed records."""
    flows = throughput_series(rank_records)
    if not flows["samples_per_s"][0] and not flows["data_wait_share"]:
        return None
    span_s = max([*flows["samples_per_s"][0], *(x for xs, _ in flows["data_wait_share"].values() for x in xs)])
    unit, scale = ("minutes", 60.0) if span_s > 300 else ("seconds", 1.0)
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 5.0), sharex=True)
    top.plot([x / scale for x in flows["samples_per_s"][0]], flows["samples_per_s"][1], color="tab:blue")
    top.set(ylabel="samples/s (all ranks)", title=title)
    top.set_ylim(bottom=0)  # an autoscaled axis makes a 1% wobble look like a collapse
    for rank, (xs, ys) in flows["data_wait_share"].items():
        bottom.plot([x / scale for x in xs], [100 * y for y in ys], label=f"rank {rank}", linewidth=1.0)
    bottom.set(xlabel=f"{unit} since the phase's first record", ylabel="data wait (% of step)", ylim=(0, 100))
    if flows["data_wait_share"]:
        bottom.legend(fontsize=8, ncol=4)
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _png(fig)
