"""What a run directory holds for its report, read through the storage layer (local path or s3://).

Read (docs/contracts.md): ``phase{p}/checkpoints/step-*/metrics.json`` (``padnet-dist eval``),
``phase{p}/eval/step-*.json`` (evaluation inside training), ``phase{p}/logs/rank{r}.jsonl`` (per-step records),
``phase{p}/logs/config.yaml`` and committed checkpoints' ``config.yaml`` (the run's config), and
``pipeline.json`` (the coordinator's state) when present. Nothing is written here.

Records are read defensively: a torn JSONL line (a crash mid-write) is skipped, and record keys this module does not
know (fields added to the per-step records later) are carried along untouched.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from padnet_dist.config import Config, StorageConfig, from_yaml_text
from padnet_dist.errors import UserError
from padnet_dist.storage import StorageNotFound, is_s3, join_url, storage_for
from padnet_dist.storage.url import local_path

PHASES = (1, 2)
_COMMITTED = re.compile(r"checkpoints/step-(\d{9})/COMMITTED")
_CHECKPOINT_METRICS = re.compile(r"checkpoints/step-(\d{9})/metrics\.json")
_TRAINING_EVAL = re.compile(r"eval/step-(\d{9})\.json")
_RANK_LOG = re.compile(r"logs/rank(\d+)\.jsonl")
_STEP_DIR = re.compile(r"step-(\d{9})")


@dataclass(frozen=True)
class Evaluation:
    """The metrics of one evaluated checkpoint (``padnet_dist.eval.evaluate.evaluate_split``'s dict, verbatim)."""

    phase: int
    step: int
    # "eval": {checkpoint}/metrics.json of `padnet-dist eval`; "pipeline.json": the same numbers as the coordinator
    # recorded them (the checkpoint was pruned since); "training": {phase_dir}/eval/step-*.json
    source: str
    url: str
    metrics: dict[str, Any]


@dataclass
class PhaseRecords:
    phase: int
    evaluations: list[Evaluation] = field(default_factory=list)  # by step; one per step (`eval`'s when both exist)
    rank_records: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # rank -> per-step records by step
    checkpoints: list[tuple[int, str]] = field(default_factory=list)  # committed (step, url), oldest first

    @property
    def empty(self) -> bool:
        return not (self.evaluations or self.rank_records or self.checkpoints)


@dataclass
class RunRecords:
    run_dir: str
    phases: dict[int, PhaseRecords]
    config: Config | None  # the run's own config (phase 2's when it has one), None when no file holds it
    pipeline: dict[str, Any] | None  # {run_dir}/pipeline.json, None without a coordinator

    @property
    def empty(self) -> bool:
        return all(p.empty for p in self.phases.values())


def _read_json(url: str, storage) -> dict[str, Any] | None:
    try:
        value = json.loads(storage.read_bytes(url).decode())
    except (StorageNotFound, FileNotFoundError):
        return None  # deleted between listing and reading (a checkpoint pruned meanwhile)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{url} is not JSON ({e}): delete it or rewrite it with the command that made it") from None
    return value if isinstance(value, dict) else None


def _read_jsonl(url: str, storage) -> list[dict[str, Any]]:
    try:
        text = storage.read_bytes(url).decode(errors="replace")
    except (StorageNotFound, FileNotFoundError):
        return []
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a crash
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    # a resumed run rewrites its log without the redone steps; keep the last record of a step if one repeats
    by_step = {r["step"]: r for r in records}
    return [by_step[s] for s in sorted(by_step)]


def _recorded_evaluations(pipeline: dict[str, Any] | None, checkpoints_url: str) -> dict[int, tuple[str, dict]]:
    """step -> (metrics.json URL, metrics) of the evaluation jobs in pipeline.json that scored a checkpoint below
    ``checkpoints_url``."""
    found = {}
    for rec in ((pipeline or {}).get("jobs") or {}).values():
        if not isinstance(rec, dict) or rec.get("state") != "succeeded" or not isinstance(rec.get("metrics"), dict):
            continue
        checkpoint = str(rec.get("checkpoint") or "").rstrip("/")
        parent, _, name = checkpoint.rpartition("/")
        match = _STEP_DIR.fullmatch(name)
        if match and rec["metrics"] and _same_place(parent, checkpoints_url):
            found[int(match.group(1))] = (join_url(checkpoint, "metrics.json"), rec["metrics"])
    return found


def _same_place(a: str, b: str) -> bool:
    """Two spellings of one directory (a relative and an absolute local path; s3:// URLs as they are)."""
    if is_s3(a) or is_s3(b):
        return a.rstrip("/") == b.rstrip("/")
    return os.path.abspath(local_path(a)) == os.path.abspath(local_path(b))


def _read_phase(run_dir: str, phase: int, urls: list[str], storage, pipeline: dict[str, Any] | None) -> PhaseRecords:
    prefix = join_url(run_dir, f"phase{phase}") + "/"
    records = PhaseRecords(phase=phase)
    scored: dict[str, dict[int, str]] = {"eval": {}, "training": {}}
    recorded = _recorded_evaluations(pipeline, join_url(run_dir, f"phase{phase}", "checkpoints"))
    for url in urls:
        if not url.startswith(prefix):
            continue
        rest = url[len(prefix) :]
        if match := _COMMITTED.fullmatch(rest):
            records.checkpoints.append((int(match.group(1)), url[: -len("/COMMITTED")]))
        elif match := _CHECKPOINT_METRICS.fullmatch(rest):
            scored["eval"][int(match.group(1))] = url
        elif match := _TRAINING_EVAL.fullmatch(rest):
            scored["training"][int(match.group(1))] = url
        elif (match := _RANK_LOG.fullmatch(rest)) and (rank_records := _read_jsonl(url, storage)):
            records.rank_records[int(match.group(1))] = rank_records
    for step in sorted(scored["eval"].keys() | recorded.keys() | scored["training"].keys()):
        # `padnet-dist eval` of the committed checkpoint wins over the in-training score of the same step
        for source in ("eval", "pipeline.json", "training"):
            if source == "pipeline.json":
                url, metrics = recorded.get(step, (None, None))
            else:
                url = scored[source].get(step)
                metrics = None if url is None else _read_json(url, storage)
            if metrics is not None:
                records.evaluations.append(Evaluation(phase, step, source, url, metrics))
                break
    records.checkpoints.sort()
    return records


def _read_config(run_dir: str, phases: dict[int, PhaseRecords], storage) -> Config | None:
    """The config of the newest phase: its logs/config.yaml, else its newest committed checkpoint's."""
    candidates = []
    for phase in sorted(phases, reverse=True):
        candidates.append(join_url(run_dir, f"phase{phase}", "logs", "config.yaml"))
        candidates += [join_url(url, "config.yaml") for _, url in reversed(phases[phase].checkpoints)]
    error = ""
    for url in candidates:
        try:
            text = storage.read_bytes(url).decode()
        except (StorageNotFound, FileNotFoundError):
            continue
        try:
            return from_yaml_text(text)
        except Exception as e:  # noqa: BLE001 (a config of another version: try the next file)
            error = error or f"{url}: {str(e).splitlines()[0]}"
    if error:
        raise UserError(f"the run's config cannot be read ({error}): report with the padnet-dist that trained it")
    return None


def read_run(
    run_dir: str, storage_cfg: StorageConfig | None = None, *, parent_pipeline: dict[str, Any] | None = None
) -> RunRecords:
    """Everything the report shows about ``run_dir`` (a nested baseline run is read separately, given its parent's
    pipeline.json as ``parent_pipeline``: the coordinator records the nested run's evaluations there).

    A one-line UserError when ``run_dir`` holds no phase records at all.
    """
    storage = storage_for(run_dir, storage_cfg)
    run_dir = run_dir.rstrip("/")
    urls = [u for u in storage.list(run_dir) if not u.startswith(join_url(run_dir, "baseline") + "/")]
    pipeline = _read_json(join_url(run_dir, "pipeline.json"), storage)
    phases = {p: _read_phase(run_dir, p, urls, storage, pipeline or parent_pipeline) for p in PHASES}
    run = RunRecords(run_dir=run_dir, phases=phases, config=_read_config(run_dir, phases, storage), pipeline=pipeline)
    if run.empty and pipeline is None:
        raise UserError(
            f"{run_dir} holds no training records (phase1/, phase2/) or pipeline.json: "
            "give the run.dir of a run that has started"
        )
    return run
