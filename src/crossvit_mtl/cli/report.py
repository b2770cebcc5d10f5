"""`crossvit-mtl report RUN`: the run's self-contained report.html from the files in its folder."""
from __future__ import annotations

import argparse

from crossvit_mtl.cli import UserError


def run(args: argparse.Namespace) -> int:
    from crossvit_mtl.viz.report import build_report

    try:
        path = build_report(args.run, args.out)
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    print(f"wrote {path}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="write a run's self-contained HTML report",
                       description="Build RUN/report.html from RUN/metrics.json, metrics_test.json and "
                       "plots/: metric tables for every task, per-class IoU, the confusion matrix, "
                       "training curves and sample predictions, all inline (opens offline).")
    p.add_argument("run", help="run folder (the --run_dir of `crossvit-mtl fit`)")
    p.add_argument("--out", default=None, help="output file (default: RUN/report.html)")
    p.set_defaults(func=run)
