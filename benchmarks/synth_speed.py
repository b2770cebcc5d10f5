"""Rendering speed of the built-in synthetic scenes, single process.

Renders ``--samples`` consecutive samples at the given resolution, ``--runs`` times, and prints
samples/s of each run and their median (after one warm-up sample). The project's goal is at least
100 samples/s at 128x256 on one core, so the scenes can be rendered on the fly during training.

    python benchmarks/synth_speed.py [--height 128] [--width 256] [--samples 200] [--runs 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

from crossvit_mtl.data.synth import render_sample


def samples_per_second(n: int, height: int, width: int, seed: int = 0) -> float:
    start = time.perf_counter()
    for index in range(n):
        render_sample(seed, index, height, width)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    render_sample(0, 0, args.height, args.width)  # warm-up: imports, caches
    rates = [samples_per_second(args.samples, args.height, args.width) for _ in range(args.runs)]
    print("runs: " + ", ".join(f"{r:.1f}" for r in rates))
    print(f"synth {args.height}x{args.width}: {statistics.median(rates):.1f} samples/s "
          f"(median of {args.runs} runs of {args.samples} samples, one process)")


if __name__ == "__main__":
    main()
