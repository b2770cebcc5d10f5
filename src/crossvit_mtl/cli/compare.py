"""`crossvit-mtl compare RUN... --baselines RUN...`: metrics of runs side by side, with Delta-m.

Each run folder holds the ``metrics.json`` the engine writes after fit. Delta-m (%) is the
multi-task gain against single-task baselines (one baseline run per task) over the metric set
MTAN / LibMTL report (``crossvit_mtl.tasks.delta``); positive means better than the baselines.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from crossvit_mtl.cli import UserError
from crossvit_mtl.engine.report import SCALAR_LABELS
from crossvit_mtl.tasks import METRIC_DIRECTION, delta_m


def load_results(run: str | Path, argument: str = "RUN") -> dict[str, dict[str, float | None]]:
    """A run folder's scalar metrics, task -> metric -> value (None where the engine wrote null)."""
    from crossvit_mtl.cli.args import input_folder, named
    from crossvit_mtl.engine.report import read_metrics

    try:
        results = read_metrics(input_folder(argument, run) / "metrics.json")["results"]
    except ValueError as err:
        raise named(argument, err) from None
    return {task: {k: v for k, v in values.items()
                   if k in METRIC_DIRECTION.get(task, {}) and (v is None or isinstance(v, (int, float)))}
            for task, values in results.items()}


def _finite(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {t: {k: float(v) for k, v in m.items() if v is not None and math.isfinite(v)} for t, m in results.items()}


def compare_runs(runs: list[str | Path], baselines: list[str | Path]) -> list[dict[str, Any]]:
    """One row per baseline then per run: ``{"run", "baseline", "results", "delta_m"}``."""
    reference: dict[str, dict[str, float]] = {}
    rows = []
    for run in baselines:
        results = load_results(run, "--baselines")
        for task in results:
            if task in reference:
                raise UserError(f"--baselines {run}: a second baseline for task {task!r}")
        reference.update(_finite(results))
        rows.append({"run": str(run), "baseline": True, "results": results, "delta_m": None})
    for run in runs:
        results = load_results(run)
        missing = [t for t in results if t not in reference]
        if missing:
            raise UserError(f"RUN {run}: no baseline for task(s) {', '.join(missing)}")
        try:
            gain = delta_m(_finite(results), reference)
        except ValueError as err:
            raise UserError(f"RUN {run}: {err}") from None
        rows.append({"run": str(run), "baseline": False, "results": results, "delta_m": gain})
    return rows


def format_markdown(rows: list[dict[str, Any]]) -> str:
    """Every scalar metric any row has, in the engine's order, then Delta-m (%)."""
    columns = [(task, key) for task, keys in METRIC_DIRECTION.items() for key in keys
               if any(key in row["results"].get(task, {}) for row in rows)]
    arrow = {True: "↑", False: "↓"}
    header = ["run"] + [f"{task} {SCALAR_LABELS.get(key, key)} {arrow[METRIC_DIRECTION[task][key]]}"
                        for task, key in columns] + ["Δm (%) ↑"]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for row in rows:
        cells = [row["run"] + (" (baseline)" if row["baseline"] else "")]
        for task, key in columns:
            value = row["results"].get(task, {}).get(key)
            cells.append("" if value is None else f"{value:.4f}")
        cells.append("" if row["delta_m"] is None else f"{row['delta_m']:+.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(rows: list[dict[str, Any]], out: Path) -> None:
    """``.json`` gives the rows as data; anything else the markdown table."""
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"rows": rows}, indent=2) if out.suffix == ".json" else format_markdown(rows) + "\n"
    out.write_text(text)


def run(args: argparse.Namespace) -> int:
    from crossvit_mtl.cli.args import output_path

    out = output_path("--out", args.out, folder=False, overwrite=args.overwrite) if args.out else None
    rows = compare_runs(args.runs, args.baselines)
    print(format_markdown(rows))
    if out:
        write_report(rows, out)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="compare runs' metrics and their multi-task gain Delta-m",
                       description="Print a markdown table of every scalar metric of each run folder "
                       "(its metrics.json) and Delta-m (%%) against single-task baseline runs.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders to compare")
    p.add_argument("--baselines", nargs="+", required=True,
                   help="single-task run folders, one per task")
    p.add_argument("--out", help="also write the table: .json for data, else markdown")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)
