"""``padnet-dist report RUN_DIR [--out DIR]``: write ``report.html`` and ``report.json`` (and ``report_files/``) for a
run, into the run dir (local or s3://) unless ``--out`` says elsewhere. The last line printed is
``report: <path or URL of report.html>``.

``--config`` files and ``key=value`` overrides apply on top of the run's own config, as for ``padnet-dist eval``
(e.g. ``storage.endpoint_url=...`` for an S3-compatible store, ``data.val_manifest=...`` for another split). RUN_DIR
and the overrides may come in any order: the one positional that is not ``key=value`` is the run dir.
"""

from __future__ import annotations

import argparse
import re

from padnet_dist.config.cli_args import config_from_args

_OVERRIDE = re.compile(r"[A-Za-z_][\w-]*(\.[\w-]+)*=")  # a dotted config key, then '='; no path or URL matches


class _RunDirAndOverrides(argparse.Action):
    """Splits the positionals into ``run_dir`` (the one that is not ``key=value``) and ``overrides``."""

    def __call__(self, parser, namespace, values, option_string=None):
        run_dirs = [v for v in values if not _OVERRIDE.match(v)]
        if len(run_dirs) != 1:
            got = f"{len(run_dirs)}: {' '.join(run_dirs)}" if run_dirs else "none"
            parser.error(f"give one RUN_DIR besides the key=value overrides (got {got})")
        namespace.run_dir = run_dirs[0]
        namespace.overrides = [v for v in values if _OVERRIDE.match(v)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "%(prog)s RUN_DIR [--out DIR] [--num-panels N] [--config FILE] [KEY=VALUE ...]"
    parser.add_argument(
        "overrides",
        nargs="+",
        action=_RunDirAndOverrides,
        metavar="RUN_DIR|KEY=VALUE",
        help="the run's run.dir (local path or s3://), and dotlist overrides over the run's config",
    )
    parser.add_argument(
        "--config", action="append", default=[], metavar="FILE", help="YAML overrides over the run's config, in order"
    )
    parser.add_argument("--out", default="", metavar="DIR", help="write the report here instead of RUN_DIR")
    parser.add_argument(
        "--num-panels", type=int, default=3, metavar="N", help="validation samples shown as example panels (default 3)"
    )


def run(args: argparse.Namespace) -> int:
    from padnet_dist.errors import UserError
    from padnet_dist.report.build import write_report

    if args.num_panels < 0:
        raise UserError(f"--num-panels {args.num_panels}: give 0 or more samples")
    cfg = config_from_args(args)  # validates the overrides; its storage section reaches the run dir
    url = write_report(
        args.run_dir,
        out_url=args.out,
        storage_cfg=cfg.storage,
        config_files=args.config,
        overrides=args.overrides,
        num_panel_samples=args.num_panels,
    )
    print(f"report: {url}")
    return 0
