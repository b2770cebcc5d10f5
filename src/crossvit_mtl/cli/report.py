"""`crossvit-mtl report RUN`: the run's self-contained report.html from the files in its folder."""
from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from crossvit_mtl.cli.args import input_folder, named, output_path
    from crossvit_mtl.viz.report import build_report

    run_dir = input_folder("RUN", args.run)
    # the run's own report.html is rebuilt from its files; any other existing file is kept
    out = output_path("--out", args.out, folder=False, overwrite=args.overwrite) if args.out else None
    try:
        path = build_report(run_dir, out)
    except (FileNotFoundError, ValueError) as err:
        raise named("RUN", err) from None
    print(f"wrote {path}")
    return 0


def add_parser(sub) -> None:
    from crossvit_mtl.cli.args import add_flag

    p = sub.add_parser("report", help="write a run's self-contained HTML report",
                       description="Build RUN/report.html from RUN/metrics.json, metrics_test.json and "
                       "plots/: metric tables for every task, per-class IoU, the confusion matrix, "
                       "training curves and sample predictions, all inline (opens offline).")
    p.add_argument("run", metavar="RUN", help="run folder (the --run_dir of `crossvit-mtl fit`)")
    p.add_argument("--out", default=None, help="output file (default: RUN/report.html, rebuilt)")
    add_flag(p, "--overwrite", help="replace an existing --out file")
    p.set_defaults(func=run, output=lambda args: f"--out {args.out}" if args.out else Path(args.run) / "report.html")
