"""A tested run's figures with the test set's sampling noise: each task's Delta-m metrics, with the
2.5th and 97.5th percentiles of a bootstrap over its test samples (``test_samples.npz``, which every
test writes; ``crossvit_mtl.comparison``). One training seed: the spread over seeds is not in it.

    python benchmarks/test_intervals.py RUN_DIR [RUN_DIR ...] [--bootstrap 2000]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from crossvit_mtl.comparison import SAMPLES_FILE, bootstrap_counts, read_sample_states, replicate_results
from crossvit_mtl.tasks import get_task


def intervals(run: Path, replicates: int) -> list[tuple[str, str, float, float, float]]:
    """(task, metric label, value, low, high) of each task's Delta-m metrics."""
    samples = read_sample_states(run / SAMPLES_FILE)
    results = json.loads((run / "metrics_test.json").read_text())["results"]
    resampled = replicate_results(samples, bootstrap_counts(samples.count, replicates))
    rows = []
    for task in samples.states:
        for key in get_task(task).delta_metrics:
            values = np.array([r[task].get(key, np.nan) for r in resampled])
            low, high = np.nanpercentile(values, [2.5, 97.5])
            rows.append((task, get_task(task).metrics[key].label, float(results[task][key]), float(low), float(high)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--bootstrap", type=int, default=2000, help="resamples of the test samples")
    args = parser.parse_args()
    for run in args.runs:
        count = read_sample_states(run / SAMPLES_FILE).count
        print(f"{run}: {count} test samples, {args.bootstrap} resamples (95 % percentile intervals)")
        print("| task | metric | value | 95 % interval |\n|---|---|---:|---:|")
        for task, label, value, low, high in intervals(run, args.bootstrap):
            print(f"| {task} | {label} | {value:.4f} | [{low:.4f}, {high:.4f}] |")


if __name__ == "__main__":
    main()
