"""`crossvit-mtl compare RUN... --baselines RUN... [--published BENCHMARK]`: runs side by side with
their seed noise and Delta-m, and the papers' figures beside them.

Each RUN is a run folder or a folder of seed run folders (``crossvit_mtl.comparison``). The tables
give each task's own Delta first, then every metric as mean ± std over seeds with Delta-m in both
conventions of the literature (over every task and over the dense tasks), against a reference run
(``ew`` when present) the seed-paired differences with their intervals (seeds and the test set's
sampling noise), then every test with its p-value; ``*`` marks what survives Holm's correction.
``--published pascal_context|nyud_v2`` adds the published rows (``crossvit_mtl.data.published``).
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
    if not args.baselines and not args.published:
        raise named("--baselines", "required (single-task runs, one per task), unless --published is given")
    baselines = [input_folder("--baselines", b) for b in args.baselines or ()]
    try:
        comparison = compare(runs, baselines, split=args.split, reference=args.reference, metric_set=args.delta_m_set,
                             seeds=args.seeds, correction=args.correction, bootstrap=args.bootstrap,
                             published=args.published)
    except ComparisonError as err:
        raise named({"run": "RUN", "baseline": "--baselines"}.get(err.role or "", "compare:"), err) from None
    print(report_markdown(comparison, every_metric=args.all_metrics))
    if out:
        write_outputs(comparison, out)
    return 0


def add_parser(sub) -> None:
    from crossvit_mtl.cli.args import MAX_SEED, Integer, add_flag
    from crossvit_mtl.comparison import BOOTSTRAP, CORRECTIONS, DELTA_M_SETS
    from crossvit_mtl.data.published import PUBLISHED

    p = sub.add_parser("compare", help="compare runs' metrics over seeds and their multi-task gain Delta-m",
                       description="Print markdown tables of each task's own Delta, each run's metrics (mean ± "
                       "std over its seed folders) with Delta-m (%%) in both conventions against single-task "
                       "baseline runs (over every task and over the dense tasks), the seed-paired differences to "
                       "a reference run, and every test; * marks what survives Holm's correction over all of "
                       "them, with the test set's sampling noise in the intervals (a bootstrap over its samples).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders, or folders of seed run folders")
    p.add_argument("--baselines", nargs="+",
                   help="single-task run folders (or folders of seeds), one per task (required without --published)")
    p.add_argument("--published", choices=tuple(PUBLISHED),
                   help="add the published figures of this benchmark (InvPT, TaskPrompter, ATRC) as rows, with "
                   "their Delta-m against each baseline seed; with --delta_m_set single, MTI-Net's Delta-m")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="metrics_test.json (default; the split never used for selection) or metrics.json (val)")
    p.add_argument("--reference", help="run the others are tested against (default: the run named ew)")
    p.add_argument("--delta_m_set", choices=DELTA_M_SETS, default="default",
                   help="the metrics Delta-m averages: each task's Delta-m metrics (default: MTAN, LibMTL, "
                   "Nash-MTL), single (one per task: MTI-Net, ATRC, InvPT; saliency by mIoU, edges by odsF, "
                   "depth by RMSE) or all")
    p.add_argument("--seeds", type=Integer(0, MAX_SEED), nargs="+",
                   help="only these seed folders (seedN), e.g. a sweep's test seeds and not its screening seed")
    p.add_argument("--correction", choices=tuple(CORRECTIONS), default="holm",
                   help="for testing every marked figure at once: " + "; ".join(CORRECTIONS.values()).replace("%", "%%"))
    p.add_argument("--bootstrap", type=Integer(0, 100_000), default=BOOTSTRAP, metavar="B",
                   help=f"resamples of the test samples for the test set's noise (default {BOOTSTRAP}; 0: none)")
    add_flag(p, "--all_metrics", help="print every metric, not each task's primary one")
    p.add_argument("--out", help="also write the tables (.md) or the numbers (.json)")
    add_flag(p, "--overwrite", help="replace an existing --out file")
    p.set_defaults(func=run)
