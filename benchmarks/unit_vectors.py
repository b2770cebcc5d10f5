"""Forward + backward time of normalising dense maps over their channel axis: PyTorch's
``F.normalize`` against ``crossvit_mtl.functional.unit_vectors`` (a sum of squares), side by side.

    python benchmarks/unit_vectors.py [--shape 16 3 128 256] [--repeats 7]

The normals head and the cosine loss normalise (B, 3, H, W) maps; on CPU the first spends most of
its time in a strided reduction over the 3-channel axis.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from crossvit_mtl.functional import unit_vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[16, 3, 128, 256], help="B C H W")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    x = torch.randn(*args.shape, requires_grad=True)
    ways = {"F.normalize": lambda t: F.normalize(t, dim=1, eps=1e-6), "unit_vectors": lambda t: unit_vectors(t, eps=1e-6)}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeats):  # interleaved, so both see the same machine
        for name, fn in ways.items():
            start = time.perf_counter()
            fn(x).sum().backward()
            times[name].append(time.perf_counter() - start)
    print(f"forward + backward over the channel axis of {tuple(args.shape)}, fp32, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}:")
    for name, values in times.items():
        print(f"  {name:<13} {statistics.median(values) * 1000:8.1f} ms")
    ratio = statistics.median(times["F.normalize"]) / statistics.median(times["unit_vectors"])
    print(f"  unit_vectors is {ratio:.1f}x faster")


if __name__ == "__main__":
    main()
