"""Time per image of the boundary scores (crossvit_mtl.tasks.edge_eval) and, where pyEdgeEval is
installed, how far they are from that independent reimplementation of the BSDS pipeline.

    python benchmarks/edge_eval_speed.py [--images 20] [--size 375 500] [--max-dist 0.0075] [--timing-only]

Synthetic scenes stand in for PASCAL-Context (Voronoi label maps, an 8-bit soft prediction of
their boundaries: blurred, partly shifted, partly missed, with clutter and a noise floor). Prints,
one process:
  * per protocol (seism: NMS + 101 thresholds; seism-quick: 21; mtinet: no NMS, 99) the median
    seconds per image and the NMS's share, and the data set's ODS / OIS / AP;
  * the effect of not thinning the ground truth (one of SEISM's versions does not);
  * with pyEdgeEval (pip install pyedgeeval opencv-python-headless): the same BSDS-style pipeline
    there (its thinning, BSDS's approximate correspondPixels) against ours, per image and for the
    data set, the matched pixels of the two matchings on identical maps, and its NMS (which smooths
    the map with convTri(E, 1) first) against SEISM's.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy import ndimage

from crossvit_mtl.tasks.edge_eval import (
    HED_THRESHOLDS,
    MTINET_THRESHOLDS,
    PROTOCOLS,
    best_counts,
    edge_counts,
    edge_orientation,
    edges_nms,
    precision_recall,
    seg2bmap,
    summarize,
    thin_binary,
)


def scene(seed: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    seeds = rng.uniform((0, 0), (h, w), size=(int(rng.integers(15, 45)), 2)).astype(np.float32)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    labels = np.zeros((h, w), np.int32)
    best = np.full((h, w), np.inf, np.float32)
    for k, (y, x) in enumerate(seeds):
        d = (yy - y) ** 2 + (xx - x) ** 2
        labels[d < best], best = k, np.minimum(best, d)
    for k in range(6):  # objects on top
        y, x, ry, rx = rng.uniform((0, 0, 10, 10), (h, w, h / 5, w / 5))
        labels[((yy - y) / ry) ** 2 + ((xx - x) / rx) ** 2 < 1] = 100 + k
    bmap = seg2bmap(labels).astype(np.float32)
    bmap[ndimage.gaussian_filter(rng.random((h, w)), 10) > 0.506] = 0  # stretches the network misses
    drift = [ndimage.gaussian_filter(rng.standard_normal((h, w)), 20) * 200 for _ in range(2)]
    found = ndimage.map_coordinates(bmap, [yy + drift[0], xx + drift[1]], order=1)  # located a few pixels off
    texture = np.zeros((h, w), np.float32)  # edges inside regions: short, some strong
    for _ in range(int(rng.integers(150, 250))):
        y, x, dy, dx = rng.uniform((0, 0, -30, -30), (h, w, 30, 30))
        steps = np.linspace(0, 1, 80)
        texture[np.clip((y + dy * steps).astype(int), 0, h - 1), np.clip((x + dx * steps).astype(int), 0, w - 1)] = \
            rng.uniform(0.4, 1.0)
    soft = ndimage.gaussian_filter(found + 0.8 * texture, 1.5)
    soft *= 0.5 + ndimage.gaussian_filter(rng.random((h, w)), 15) * 2
    soft += 0.03 * rng.random((h, w)).astype(np.float32)
    return labels, np.round(255 * np.clip(soft / np.quantile(soft, 0.995), 0, 1)).astype(np.uint8)


def dataset_summary(per_image: list[np.ndarray], thresholds) -> dict[str, float]:
    s = summarize(sum(per_image), sum(best_counts(c) for c in per_image), thresholds)
    return {"ODS": s.ods_f, "OIS": s.ois_f, "AP": s.ap}


def line(name: str, summary: dict[str, float]) -> str:
    return f"{name:<34} " + "  ".join(f"{k} {v:.4f}" for k, v in summary.items())


def timing(scenes, max_dist: float) -> None:
    print("time per image (median), one process:")
    for name, protocol in PROTOCOLS.items():
        seconds, counts = [], []
        for labels, pred in scenes:
            start = time.perf_counter()
            counts.append(edge_counts(pred, seg2bmap(labels), protocol, max_dist=max_dist))
            seconds.append(time.perf_counter() - start)
        print(f"  {name:<12} {statistics.median(seconds):6.3f} s  (min {min(seconds):.3f}, max {max(seconds):.3f}); "
              + line("", dataset_summary(counts, protocol.thresholds)).strip())
    nms = []
    for _, pred in scenes:
        start = time.perf_counter()
        edges_nms(pred.astype(np.float32) / np.float32(255))
        nms.append(time.perf_counter() - start)
    print(f"  of which NMS {statistics.median(nms):.3f} s")


def ground_truth_thinning(scenes, max_dist: float) -> None:
    thinned = [edge_counts(p, seg2bmap(lab), max_dist=max_dist) for lab, p in scenes]
    plain = [edge_counts(p, seg2bmap(lab), max_dist=max_dist, thin_gt=False) for lab, p in scenes]
    print("seism protocol, ground truth thinned (default) / not thinned:")
    print("  " + line("thinned", dataset_summary(thinned, HED_THRESHOLDS)))
    print("  " + line("not thinned", dataset_summary(plain, HED_THRESHOLDS)))


def against_pyedgeeval(scenes, max_dist: float) -> None:
    try:
        from pyEdgeEval._lib import correspond_pixels, nms
        from pyEdgeEval.common.binary_label.evaluate_boundaries import evaluate_boundaries_threshold
        from pyEdgeEval.preprocess import binary_thin
    except ImportError as err:
        print(f"pyEdgeEval not importable ({err}): no comparison")
        return
    thresholds = np.array(MTINET_THRESHOLDS)
    for with_nms in (False, True):
        ours, theirs, gaps = [], [], []
        for labels, pred in scenes:
            gt = thin_binary(seg2bmap(labels))
            mine = edge_counts(pred, gt, PROTOCOLS["seism" if with_nms else "mtinet"], max_dist=max_dist,
                               thresholds=tuple(thresholds))
            other = np.stack(evaluate_boundaries_threshold(thresholds, pred / 255.0, gt, max_dist=max_dist,
                                                           apply_thinning=True, apply_nms=with_nms), axis=1)
            ours.append(mine)
            theirs.append(other.astype(np.int64))
            gaps.append(abs(precision_recall(mine)[2].max() - precision_recall(other)[2].max()))
        label = "with NMS (ours SEISM's; theirs convTri(E, 1) first)" if with_nms else "no NMS (BSDS-style)"
        print(f"pyEdgeEval, {label}, 99 thresholds: largest per-image |best F difference| {max(gaps):.4f}")
        print("  " + line("ours", dataset_summary(ours, tuple(thresholds))))
        print("  " + line("pyEdgeEval", dataset_summary(theirs, tuple(thresholds))))
    extra, total = 0, 0
    for labels, pred in scenes:  # the two matchings on identical binary maps
        gt = thin_binary(seg2bmap(labels))
        for t in (0.1, 0.3, 0.5):
            binary = binary_thin(pred / 255.0 >= t)
            m1, _, _, _ = correspond_pixels(binary, gt, max_dist=max_dist)
            exact = _exact(gt, binary, max_dist)
            extra += exact - int((m1 > 0).sum())
            total += exact
    print(f"matched pixels on identical maps (t = 0.1, 0.3, 0.5): exact maximum {total}, "
          f"correspondPixels {total - extra} ({100 * extra / max(total, 1):.3f} % fewer)")
    kept = flipped = thinned = thin_diff = 0
    for _, pred in scenes:  # the pieces alone: NMS on the same map and orientation, and thinning
        edges = pred.astype(np.float32) / np.float32(255)
        angle = edge_orientation(edges)
        ours, theirs = edges_nms(edges, angle) > 0, nms(edges.astype(np.float64), angle.astype(np.float64),
                                                          r=1, s=5, m=1.01) > 0
        kept += int(ours.sum())
        flipped += int((ours != theirs).sum())
        for t in (0.05, 0.2, 0.5):
            binary = edges_nms(edges, angle) >= t
            mine = thin_binary(binary)
            thinned += int(mine.sum())
            thin_diff += int((mine != binary_thin(binary)).sum())
    print(f"NMS against pyEdgeEval's C port (double precision), same map and orientation: {flipped} of {kept} "
          f"kept pixels differ ({100 * flipped / max(kept, 1):.3f} %)")
    print(f"thinning (scikit-image's algorithm) against py-bsds500's bwmorph port on the NMS maps at "
          f"t = 0.05, 0.2, 0.5: {thin_diff} of {thinned} pixels differ ({100 * thin_diff / max(thinned, 1):.3f} %)")


def _exact(gt: np.ndarray, binary: np.ndarray, max_dist: float) -> int:
    from crossvit_mtl.tasks.edge_eval import match_count

    return match_count(gt, binary, max_dist * float(np.hypot(*gt.shape)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--size", type=int, nargs=2, default=[375, 500], metavar=("H", "W"))
    parser.add_argument("--max-dist", type=float, default=0.0075)
    parser.add_argument("--timing-only", action="store_true", help="skip the comparisons")
    args = parser.parse_args()
    scenes = [scene(seed, *args.size) for seed in range(args.images)]
    print(f"{args.images} synthetic scenes of {args.size[0]}x{args.size[1]}, maxDist {args.max_dist}")
    timing(scenes, args.max_dist)
    if not args.timing_only:
        ground_truth_thinning(scenes, args.max_dist)
        against_pyedgeeval(scenes, args.max_dist)


if __name__ == "__main__":
    main()
