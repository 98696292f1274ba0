"""``padnet-dist report RUN_DIR [--out DIR]``: write ``report.html`` and ``report.json`` (and ``report_files/``) for a
run, into the run dir (local or s3://) unless ``--out`` says elsewhere. The last line printed is
``report: <path or URL of report.html>``.

``--config`` files and ``key=value`` overrides apply on top of the run's own config, as for ``padnet-dist eval``
(e.g. ``storage.endpoint_url=...`` for an S3-compatible store, ``data.val_manifest=...`` for another split).
"""

from __future__ import annotations

import argparse

from padnet_dist.config.cli_args import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run's run.dir (local path or s3://)")
    parser.add_argument("--out", default="", metavar="DIR", help="write the report here instead of RUN_DIR")
    parser.add_argument(
        "--num-panels", type=int, default=3, metavar="N", help="validation samples shown as example panels (default 3)"
    )
    add_config_arguments(parser)


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
