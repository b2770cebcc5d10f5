"""How far above trivial predictors a trained network's edges are: SEISM's odsF / oisF / AP of
predictions that learn nothing, on a split of a cache with edge maps (the built-in scenes').

* ``noise``: a uniform random probability per pixel (what chance scores under this protocol);
* ``sobel``: the grey image's gradient magnitude (scipy's Sobel), scaled to [0, 1] per image: the
  classic edge detector, which finds every texture edge, window and lane marking, not only the
  semantic boundaries the task asks for.

    python benchmarks/edge_baselines.py --cache data/synth96 --split test --workers 2

The trained network's figure is what `crossvit-mtl test` (or `fit --test_after_fit true`) prints for
the same split (configs/synth_five_tasks.yaml).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import time

import numpy as np
from scipy import ndimage

from crossvit_mtl.data.cache import CachedDataset
from crossvit_mtl.tasks import edge_eval
from crossvit_mtl.tasks.edge import DEFAULT_MAX_DIST


def predictor(name: str, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An 8-bit probability map, as a network's would be stored."""
    if name == "noise":
        return rng.integers(0, 256, image.shape[:2], dtype=np.uint8)
    grey = image.astype(np.float64).mean(-1)
    magnitude = np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1))
    return np.round(255 * magnitude / max(magnitude.max(), 1e-9)).astype(np.uint8)


def counts_of(args: tuple[str, np.ndarray, np.ndarray, int]) -> tuple[np.ndarray, np.ndarray]:
    name, image, edge, index = args
    prob = predictor(name, image, np.random.default_rng(index))
    counts = edge_eval.edge_counts(prob, edge == 1, "seism", DEFAULT_MAX_DIST, valid=edge != 255)
    return counts, edge_eval.best_counts(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", required=True, help="a cache with edge maps (crossvit-mtl data synth)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="only the first N samples")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    data = CachedDataset(args.cache, args.split, tasks=("edge",))
    count = len(data) if args.limit is None else min(args.limit, len(data))
    samples = [data.load(i) for i in range(count)]
    results = {}
    for name in ("noise", "sobel"):
        start = time.perf_counter()
        jobs = [(name, s["image"], s["edge"], i) for i, s in enumerate(samples)]
        with multiprocessing.get_context().Pool(args.workers) as pool:
            outs = pool.map(counts_of, jobs, chunksize=4)
        summary = edge_eval.summarize(sum(c for c, _ in outs), sum(b for _, b in outs),
                                      edge_eval.get_protocol("seism").thresholds)
        results[name] = {k: round(v, 4) for k, v in summary.as_dict().items()}
        print(f"{name}: odsF {summary.ods_f:.4f}, oisF {summary.ois_f:.4f}, AP {summary.ap:.4f} "
              f"({count} samples of {args.split}, {time.perf_counter() - start:.0f} s)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
