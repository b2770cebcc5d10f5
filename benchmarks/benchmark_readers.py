"""Time to read one PASCAL-Context or NYUD-v2 sample, per task, at the benchmarks' image sizes.

Writes a small tree of each archive in its real formats (the test suite's writers,
tests/fixtures_data.py) at 375x500 (PASCAL-Context's typical size) and 425x560 (ATRC's NYUD-v2),
gives every PASCAL-Context LabelMap 40 random regions so edges and normals' masks have the
boundaries a real scene has, then times ``load()`` with one task at a time and with all of them
(median over the samples of 3 passes, the first pass untimed). Edges are derived on every load, as
the references do: this says what that costs.

    python benchmarks/benchmark_readers.py [--samples 8]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from crossvit_mtl.data.nyud import NYUDv2
from crossvit_mtl.data.pascal_context import NORMALS_VALID_CLASSES, PascalContext
from fixtures_data import save_label_map, write_nyud, write_pascal_context


def region_map(size: tuple[int, int], regions: int, rng: np.random.Generator) -> np.ndarray:
    """Each pixel takes the Context class of its nearest of ``regions`` random seeds."""
    seeds = rng.random((regions, 2)) * size
    rows, cols = np.indices(size)
    nearest = np.argmin((rows[..., None] - seeds[:, 0]) ** 2 + (cols[..., None] - seeds[:, 1]) ** 2, axis=-1)
    classes = rng.choice(list(NORMALS_VALID_CLASSES.values()) + [0, 360, 420], regions)
    return classes[nearest]


def time_load(dataset, passes: int = 3) -> float:
    """Median milliseconds per ``load(i)`` over the samples of ``passes`` timed passes."""
    for i in range(len(dataset)):
        dataset.load(i)
    times = []
    for _ in range(passes):
        for i in range(len(dataset)):
            start = time.perf_counter()
            dataset.load(i)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        ids = [f"2008_{i:06d}" for i in range(args.samples)]
        pascal = write_pascal_context(Path(tmp) / "pc", {"val": ids}, size=(375, 500))
        for sample_id in ids:
            save_label_map(pascal / "pascal-context" / "trainval" / f"{sample_id}.mat", region_map((375, 500), 40, rng))
        nyud = write_nyud(Path(tmp) / "nyud", {"val": [f"{i:04d}" for i in range(args.samples)]}, size=(425, 560))
        print(f"ms per sample (median of {3 * args.samples} loads)")
        for cls, root in ((PascalContext, pascal), (NYUDv2, nyud)):
            for tasks in [(task,) for task in cls.TASKS] + [cls.TASKS]:
                label = "all tasks" if len(tasks) > 1 else f"image + {tasks[0]}"
                print(f"{cls.__name__:14s} {label:22s} {time_load(cls(root, 'val', tasks=tasks)):7.1f}")


if __name__ == "__main__":
    main()
