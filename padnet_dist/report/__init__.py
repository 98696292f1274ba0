"""The run report (``padnet-dist report``): a run directory's evaluations, training curves, example panels,
baselines and jobs as ``report.html`` with ``report.json`` beside it. ``build.write_report`` is the entry point."""
