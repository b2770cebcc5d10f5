"""Where the built-in scenes' rendering time goes: scenes/s in one process, and the share of each
stage of ``render_sample`` (drawing the scene, checking that it shows its class, ray casting,
shading and the other targets, the edge maps).

    python benchmarks/profile_render.py [--size 128x256] [--scenes 200] [--seed 0] [--against main]

The rate is timed without the profiler; the shares come from a second pass under cProfile, which
slows Python-heavy stages more than numpy-heavy ones, so read them as a ranking with sizes.

``--against REV`` imports the package of git revision REV beside the working tree's (as
``ab_revisions.py`` does) and renders every timed scene with both, one after the other, the
order swapped every scene, so a shared machine's load weighs on both alike: it prints both rates,
the median of the per-scene speed-ups, and checks that every sample is bit-identical (image,
every target, the class), which a change of speed alone must keep.
"""
from __future__ import annotations

import argparse
import cProfile
import importlib
import os
import platform
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from crossvit_mtl.data.synth import CUE_SIZE, render_sample


def _stats_of(stats: pstats.Stats, name: str, caller: str | None = None) -> tuple[int, float]:
    """(calls, cumulative seconds) of the function ``name``, only from ``caller`` when given."""
    calls, seconds = 0, 0.0
    for (_, _, func), (_, ncalls, _, cumtime, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if func != name:
            continue
        if caller is None:
            calls, seconds = calls + ncalls, seconds + cumtime
            continue
        for (_, _, caller_func), per_caller in callers.items():
            if caller_func == caller:
                calls, seconds = calls + per_caller[1], seconds + per_caller[3]
    return calls, seconds


def identical(a: dict, b: dict) -> bool:
    """Whether two samples hold the same targets with the same dtypes, shapes and bytes."""
    return a.keys() == b.keys() and all(
        np.asarray(a[k]).dtype == np.asarray(b[k]).dtype and np.asarray(a[k]).shape == np.asarray(b[k]).shape
        and np.asarray(a[k]).tobytes() == np.asarray(b[k]).tobytes() for k in a)


def side_by_side(rev: str, seed: int, scenes: int, height: int, width: int) -> None:
    """Rates of revision ``rev`` and of the working tree, each scene rendered by both in turn."""
    from ab_revisions import import_revision  # beside this script

    with tempfile.TemporaryDirectory() as tmp:
        package = import_revision(rev, Path(tmp), "a")
        other = importlib.import_module(f"{package.__name__}.data.synth").render_sample
        for index in range(3):
            other(seed, 10_000 + index, height, width)
        mine_s, other_s, differ = [], [], []
        for index in range(scenes):
            turns = [(render_sample, mine_s), (other, other_s)]
            samples = []
            for render, times in turns if index % 2 else turns[::-1]:
                start = time.perf_counter()
                samples.append(render(seed, index, height, width))
                times.append(time.perf_counter() - start)
            if not identical(*samples):
                differ.append(index)
    ratios = [o / m for o, m in zip(other_s, mine_s)]
    print(f"against {rev}, the same {scenes} scenes rendered in turn: {rev} {scenes / sum(other_s):.1f} scenes/s, "
          f"this tree {scenes / sum(mine_s):.1f} scenes/s, {sum(other_s) / sum(mine_s):.2f}x "
          f"(median per-scene speed-up {statistics.median(ratios):.2f}x); "
          + (f"samples differ at indices {differ}" if differ else "every sample bit-identical") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="128x256", help="HxW of the rendered samples")
    parser.add_argument("--scenes", type=int, default=200, help="scenes timed (and as many profiled)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--against", metavar="REV", help="git revision to time side by side and compare with")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    for index in range(3):  # warm-up: imports, numpy's first calls
        render_sample(args.seed, 10_000 + index, height, width)
    if args.against:
        side_by_side(args.against, args.seed, args.scenes, height, width)

    start = time.perf_counter()
    for index in range(args.scenes):
        render_sample(args.seed, index, height, width)
    seconds = time.perf_counter() - start

    profile = cProfile.Profile()
    profile.enable()
    for index in range(args.scenes, 2 * args.scenes):
        render_sample(args.seed, index, height, width)
    profile.disable()
    stats = pstats.Stats(profile)
    _, total = _stats_of(stats, "render_sample")
    draws, build = _stats_of(stats, "_build_scene")
    _, check = _stats_of(stats, "layout_cues")
    _, cast = _stats_of(stats, "_z_pass", caller="render_sample")
    _, edges = _stats_of(stats, "semantic_boundaries")
    _, choose = _stats_of(stats, "scene_for")
    stages = [
        ("drawing the scene (objects placed in Python, each draw of a sample)", build),
        (f"checking that it shows its class (a z-pass at {CUE_SIZE[0]}x{CUE_SIZE[1]} per draw)", check),
        ("ray casting at the output size (z-pass)", cast),
        ("edge maps (boundaries of the labels, thinned)", edges),
        ("shading, fog, noise and the other targets", total - choose - cast - edges),
    ]
    print(f"{args.scenes} scenes at {height}x{width}, one process, seed {args.seed}: "
          f"{args.scenes / seconds:.1f} scenes/s ({1e3 * seconds / args.scenes:.1f} ms a scene); "
          f"{draws / args.scenes:.2f} draws a scene; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, numpy {np.__version__}\n")
    print("| stage | share of render_sample (cProfile) |")
    print("|---|---:|")
    for name, value in stages:
        print(f"| {name} | {100 * value / total:.0f} % |")


if __name__ == "__main__":
    main()
