"""``padnet-dist sweep``: the rows of a paper table as pipeline runs, then the table beside the paper's numbers.

Writes ``{run.dir}/<table>.md`` and ``.csv`` (``table1``, ``table2``, ``table6``, ``figure5``) and ``sweep.html``
(every table, each run's report linked), through the storage layer, as each run ends and at the end. Re-running
continues the sweep; once every run is finished it only reads their results and rewrites the tables.
"""

from __future__ import annotations

import html
import signal
from pathlib import Path

from padnet_dist.config import Config, load_config
from padnet_dist.errors import UserError
from padnet_dist.pipeline.driver import OpenRun, interrupt_on_sigterm, open_run
from padnet_dist.pipeline.lease import LeaseHeld, read_lease
from padnet_dist.pipeline.state import load_state
from padnet_dist.storage import join_url, storage_for
from padnet_dist.sweep.detach import absolute_run_dir, check_not_driven, detach, driven_elsewhere_error, sweep_argv
from padnet_dist.sweep.paper import REPORTED, TABLES, table_name
from padnet_dist.sweep.plan import SweepRun, final_metrics, plan_runs, recorded_phase1_from, share_phase1
from padnet_dist.sweep.rows import Row, rows_of, table_rows
from padnet_dist.sweep.runner import drive_runs, log
from padnet_dist.sweep.table import markdown, text_cells, title, to_csv

ABLATIONS = Path("configs/ablations")


def select_rows(table: str | None, row_files: list[str]) -> list[Row]:
    """``--table`` alone: every row of it from ``configs/ablations``; ``--rows``: those files (in ``table`` if given)."""
    name = table_name(table) if table else None
    if row_files:
        rows = rows_of([Path(f) for f in row_files], name)
        if not rows:
            raise UserError(f"none of --rows claims a row of {name} (see their '# paper:' lines)")
        return rows
    if name is None:
        raise UserError("say which rows: --table 1|2|6|figure5, or --rows configs/ablations/FILE.yaml ...")
    if not ABLATIONS.is_dir():
        raise UserError(f"no {ABLATIONS}/ here: run from the padnet-dist repository root, or pass --rows")
    return table_rows(ABLATIONS, name)


def in_paper_order(rows: list[Row], table: str) -> list[Row]:
    """The rows of ``table`` in the order the paper prints them (rows it has no number for last, as given)."""
    order = list(REPORTED.get(table, ()))
    of_table = [row for row in rows if row.table == table]
    return sorted(of_table, key=lambda r: order.index(r.row) if r.row in order else len(order))


def run_sweep(
    *,
    table: str | None,
    row_files: list[str],
    config_files: list[str],
    overrides: list[str],
    backend: str,
    num_seeds: int,
    parallel: int | None,
    detached: bool = False,
) -> int:
    """Drive the sweep here to its end (0; 1 when a run did not finish), or with ``detached`` submit its driver as a
    job on the backend and return 0."""
    cfg = load_config(config_files, overrides)  # the base config: a mistake is reported before anything starts
    backend = backend or cfg.pipeline.backend
    if backend == "ray":
        overrides = absolute_run_dir(overrides, cfg.run.dir)
        cfg = load_config(config_files, overrides)
    rows = select_rows(table, row_files)
    seeds = [cfg.data.seed + i for i in range(num_seeds)]
    runs = plan_runs(rows, seeds=seeds, base_configs=config_files, overrides=overrides, sweep_dir=cfg.run.dir)
    runs = _shared(runs, storage_for(cfg.run.dir, cfg.storage))
    if detached:
        argv = sweep_argv(table=table, row_files=row_files, config_files=config_files, overrides=overrides,
                          backend=backend, num_seeds=num_seeds, parallel=parallel)  # fmt: skip
        return detach(runs, argv=argv, config_files=config_files, overrides=overrides, backend=backend)
    return drive_sweep(rows, runs, cfg, backend, parallel)


def drive_sweep(rows: list[Row], runs: list[SweepRun], cfg: Config, backend: str, parallel: int | None) -> int:
    """Every run to its end from this process, the tables rewritten as each ends; 1 when a run did not finish."""
    check_not_driven(runs, cfg.run.dir, cfg.storage)
    if parallel is None:
        parallel = 1 if backend == "local" else 0
    num_seeds = len({r.seed for r in runs})
    log(f"{len(runs)} runs ({len({r.preset for r in runs})} presets x {num_seeds} seeds) in {cfg.run.dir} "
        f"on the {backend} backend, {'all' if parallel <= 0 else parallel} at a time; "
        f"{sum(not r.phase1_from for r in runs)} train phase 1, the others share one")  # fmt: skip

    def open_or_refuse(run: SweepRun) -> OpenRun:
        try:
            opened = open_run(run.config_files, run.overrides, backend)
        except LeaseHeld:  # taken since check_not_driven: say which run, in one line
            held = read_lease(run.run_dir, cfg.storage) or {}
            raise driven_elsewhere_error(run, held, cfg.run.dir) from None
        opened.coordinator.label = run.name  # one log for every run: each line says whose
        return opened

    def rewrite_tables(_run: SweepRun, _code: int) -> None:
        try:
            write_tables(rows, runs, cfg.run.dir, cfg.storage)
        except Exception as e:  # noqa: BLE001 - a storage hiccup must not stop the runs; the end rewrites them
            log(f"tables not rewritten ({e}); they are written again as the next run ends")

    previous = signal.signal(signal.SIGTERM, interrupt_on_sigterm)  # SIGTERM as Ctrl-C: local jobs commit first
    try:
        codes = drive_runs(runs, backend=backend, parallel=parallel, poll_every_s=cfg.pipeline.poll_every_s,
                           opener=open_or_refuse, on_end=rewrite_tables)  # fmt: skip
    finally:
        signal.signal(signal.SIGTERM, previous)
    written = write_tables(rows, runs, cfg.run.dir, cfg.storage)
    for url in written:
        print(f"table: {url}", flush=True)
    unfinished = sorted(name for name, code in codes.items() if code != 0)
    if unfinished:
        log(f"not finished: {', '.join(unfinished)}; the tables show the runs that finished. Re-run the same "
            "command to continue")  # fmt: skip
        return 1
    return 0


def _shared(runs: list[SweepRun], storage) -> list[SweepRun]:
    """Every run's config checked (before any job starts), the shared phase 1s planned, runs that train a phase 1
    first (so that one at a time never waits for a phase 1 that comes later)."""
    configs = [load_config(run.config_files, run.overrides) for run in runs]
    started = {run.run_dir: recorded_phase1_from(load_state(run.run_dir, storage)) for run in runs}
    shared = share_phase1(runs, configs, started)
    for run in shared:
        if run.phase1_from:
            log(f"{run.name}: phase 1 from {run.phase1_from}")
    return sorted(shared, key=lambda r: bool(r.phase1_from))


def collect(runs: list[SweepRun], storage) -> dict[str, list[dict]]:
    """Preset stem -> the final phase-2 metrics of each of its finished seeds."""
    found: dict[str, list[dict]] = {}
    for run in runs:
        state = load_state(run.run_dir, storage)
        metrics = final_metrics(state) if state else None
        found.setdefault(run.preset, [])
        if metrics is not None:
            found[run.preset].append(metrics)
    return found


def write_tables(rows: list[Row], runs: list[SweepRun], sweep_dir: str, storage_cfg) -> list[str]:
    storage = storage_for(sweep_dir, storage_cfg)
    results = collect(runs, storage)
    written, sections = [], []
    for table in TABLES:
        of_table = [(row, results.get(row.run_name, [])) for row in in_paper_order(rows, table)]
        if not of_table:
            continue
        stem = table.lower().replace(" ", "")
        text = markdown(table, of_table)
        for suffix, data in ((".md", text), (".csv", to_csv(table, of_table))):
            url = join_url(sweep_dir, stem + suffix)
            storage.write_bytes(url, data.encode())
            written.append(url)
        sections.append(_html_section(table, stem, of_table, runs))
    url = join_url(sweep_dir, "sweep.html")
    storage.write_bytes(url, _html_page(sections).encode())
    return [*written, url]


def _html_section(table: str, stem: str, of_table: list[tuple[Row, list[dict]]], runs: list[SweepRun]) -> str:
    """The table in HTML, with each row's runs linked to their reports (relative links)."""
    head, lines = text_cells(table, of_table)
    out = [f"<h2>{html.escape(title(table))}</h2>", f'<p><a href="{stem}.md">{stem}.md</a> · <a href="{stem}.csv">'
           f"{stem}.csv</a></p>", "<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in [*head, "runs"]) + "</tr>"]  # fmt: skip
    for (row, _), values in zip(of_table, lines, strict=True):
        links = " ".join(
            f'<a href="{r.preset}/seed{r.seed}/report.html">seed {r.seed}</a>' for r in runs if r.preset == row.run_name
        )
        tds = "".join(f"<td>{html.escape(v)}</td>" for v in values)
        out.append(f"<tr>{tds}<td>{links}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def _html_page(sections: list[str]) -> str:
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>padnet-dist sweep</title><style>{style}</style>"
            f"</head><body><h1>padnet-dist sweep</h1>{''.join(sections)}</body></html>\n")  # fmt: skip
