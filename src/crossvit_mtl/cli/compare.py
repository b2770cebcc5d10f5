"""`crossvit-mtl compare RUN... --baselines RUN...`: runs side by side with their seed noise and Delta-m.

Each RUN is a run folder or a folder of seed run folders (``crossvit_mtl.comparison``). The table
gives every metric as mean ± std over seeds, Delta-m in both conventions of the literature, and,
against a reference run (``ew`` when present), the seed-paired difference with its 95 % interval.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def write_outputs(comparison, out: Path) -> None:
    """``.json`` gives the numbers as data; anything else the markdown tables."""
    from crossvit_mtl.comparison import report_markdown, to_json, to_markdown

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".json":
        out.write_text(json.dumps(to_json(comparison), indent=2))
    else:
        out.write_text(f"{report_markdown(comparison)}\n\nEvery metric:\n\n{to_markdown(comparison)}\n")


def run(args: argparse.Namespace) -> int:
    from crossvit_mtl.cli.args import input_folder, named, output_path
    from crossvit_mtl.comparison import ComparisonError, compare, report_markdown

    out = output_path("--out", args.out, folder=False, overwrite=args.overwrite) if args.out else None
    runs = [input_folder("RUN", r) for r in args.runs]
    baselines = [input_folder("--baselines", b) for b in args.baselines]
    try:
        comparison = compare(runs, baselines, split=args.split, reference=args.reference, metric_set=args.delta_m_set)
    except ComparisonError as err:
        raise named({"run": "RUN", "baseline": "--baselines"}.get(err.role or "", "compare:"), err) from None
    print(report_markdown(comparison, every_metric=args.all_metrics))
    if out:
        write_outputs(comparison, out)
    return 0


def add_parser(sub) -> None:
    from crossvit_mtl.cli.args import add_flag
    from crossvit_mtl.comparison import DELTA_M_SETS

    p = sub.add_parser("compare", help="compare runs' metrics over seeds and their multi-task gain Delta-m",
                       description="Print a markdown table of each run's metrics (mean ± std over its seed "
                       "folders), Delta-m (%%) in both conventions against single-task baseline runs, and "
                       "the seed-paired difference to a reference run; * marks what is beyond seed noise "
                       "(95 %% interval excludes 0).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders, or folders of seed run folders")
    p.add_argument("--baselines", nargs="+", required=True,
                   help="single-task run folders (or folders of seeds), one per task")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="metrics_test.json (default; the split never used for selection) or metrics.json (val)")
    p.add_argument("--reference", help="run the others are tested against (default: the run named ew)")
    p.add_argument("--delta_m_set", choices=DELTA_M_SETS, default="default",
                   help="the metrics Delta-m averages: each task's Delta-m metrics (default: MTAN, LibMTL, "
                   "Nash-MTL), single (one per task: MTI-Net, ATRC, InvPT; saliency by mIoU, edges by odsF, "
                   "depth by RMSE) or all")
    add_flag(p, "--all_metrics", help="print every metric, not each task's primary one")
    p.add_argument("--out", help="also write the tables (.md) or the numbers (.json)")
    add_flag(p, "--overwrite", help="replace an existing --out file")
    p.set_defaults(func=run)
