"""Where the built-in scenes' rendering time goes: scenes/s in one process, and the share of each
stage of ``render_sample`` (drawing the scene, checking that it shows its class, ray casting,
shading and the other targets, the edge maps).

    python benchmarks/profile_render.py [--size 128x256] [--scenes 200] [--seed 0] [--against main]

The rate is timed without the profiler. The shares come from two more passes over the same
scenes: one with a clock around each stage's function (wall-clock shares), one under cProfile,
which slows Python-heavy stages (the drawing) more than numpy-heavy ones.

``--against REV`` imports the package of git revision REV beside the working tree's (as
``ab_revisions.py`` does) and renders every timed scene with both, one after the other, the
order swapped every scene, so a shared machine's load weighs on both alike: it prints both rates,
the median of the per-scene speed-ups, and checks that every sample is bit-identical (image,
every target, the class), which a change of speed alone must keep; the stage table then also
gives REV's clocked milliseconds, from a pass of its own right after the working tree's.
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


def side_by_side(rev: str, other, seed: int, scenes: int, height: int, width: int) -> None:
    """Rates of revision ``rev`` (its ``render_sample``, ``other``) and of the working tree, each
    scene rendered by both in turn."""
    mine_s: list[float] = []
    other_s: list[float] = []
    differ = []
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


def wall_clock(package: str, seed: int, indices: range, height: int, width: int) -> dict[str, float]:
    """Seconds each stage of ``package``'s ``render_sample`` took over ``indices``: a clock around the
    stage's function (the drawing and the class check in ``cues``, the z-pass and the edge maps in
    ``render``)."""
    cues = importlib.import_module(f"{package}.data.synth.cues")
    render = importlib.import_module(f"{package}.data.synth.render")
    stages = [(cues, "_build_scene"), (cues, "layout_cues"), (render, "scene_for"), (render, "_z_pass"),
              (render, "semantic_boundaries")]
    spent = dict.fromkeys((name for _, name in stages), 0.0)
    originals = [(module, name, getattr(module, name)) for module, name in stages]

    def clocked(function, name):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start
        return call

    for module, name, function in originals:
        setattr(module, name, clocked(function, name))
    try:
        start = time.perf_counter()
        for index in indices:
            render.render_sample(seed, index, height, width)
        spent["render_sample"] = time.perf_counter() - start
    finally:
        for module, name, function in originals:
            setattr(module, name, function)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="128x256", help="HxW of the rendered samples")
    parser.add_argument("--scenes", type=int, default=200, help="scenes timed (and as many profiled)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--against", metavar="REV", help="git revision to time side by side and compare with")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        other = None
        if args.against:
            from ab_revisions import import_revision  # beside this script

            other = import_revision(args.against, Path(tmp), "a").__name__
        for package in ("crossvit_mtl", other) if other else ("crossvit_mtl",):
            for index in range(3):  # warm-up: imports, numpy's first calls
                importlib.import_module(f"{package}.data.synth").render_sample(args.seed, 10_000 + index, height,
                                                                               width)
        if other:
            side_by_side(args.against, importlib.import_module(f"{other}.data.synth").render_sample, args.seed,
                         args.scenes, height, width)

        start = time.perf_counter()
        for index in range(args.scenes):
            render_sample(args.seed, index, height, width)
        seconds = time.perf_counter() - start

        indices = range(args.scenes, 2 * args.scenes)
        clock = wall_clock("crossvit_mtl", args.seed, indices, height, width)
        before = wall_clock(other, args.seed, indices, height, width) if other else None
        profile = cProfile.Profile()
        profile.enable()
        for index in indices:
            render_sample(args.seed, index, height, width)
        profile.disable()
    stats = pstats.Stats(profile)
    profiled = {name: _stats_of(stats, name)[1] for name in clock}
    profiled["_z_pass"] = _stats_of(stats, "_z_pass", caller="render_sample")[1]
    draws = _stats_of(stats, "_build_scene")[0]
    print(f"{args.scenes} scenes at {height}x{width}, one process, seed {args.seed}: "
          f"{args.scenes / seconds:.1f} scenes/s ({1e3 * seconds / args.scenes:.1f} ms a scene); "
          f"{draws / args.scenes:.2f} draws a scene; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, numpy {np.__version__}\n")
    print("| stage | ms a scene (clocked) | share (clocked) | share (cProfile) |"
          + (f" ms a scene, {args.against} (clocked) |" if before else ""))
    print("|---|---:|---:|---:|" + ("---:|" if before else ""))
    profiled_stages = stage_seconds(profiled)
    before_stages = stage_seconds(before) if before else {}
    for label, spent in stage_seconds(clock).items():
        print(f"| {label} | {1e3 * spent / args.scenes:.2f} | {100 * spent / clock['render_sample']:.0f} % "
              f"| {100 * profiled_stages[label] / profiled['render_sample']:.0f} % |"
              + (f" {1e3 * before_stages[label] / args.scenes:.2f} |" if before else ""))
    if before:
        print(f"| all of render_sample | {1e3 * clock['render_sample'] / args.scenes:.2f} | | | "
              f"{1e3 * before['render_sample'] / args.scenes:.2f} |")


def stage_seconds(seconds: dict[str, float]) -> dict[str, float]:
    """The stages of a sample from the seconds spent in their functions."""
    return {
        "drawing the scene (objects placed in Python, each draw of a sample)": seconds["_build_scene"],
        f"checking that it shows its class (a z-pass at {CUE_SIZE[0]}x{CUE_SIZE[1]} per draw)":
            seconds["layout_cues"],
        "ray casting at the output size (z-pass)": seconds["_z_pass"],
        "edge maps (boundaries of the labels, thinned)": seconds["semantic_boundaries"],
        "shading, fog, noise and the other targets":
            seconds["render_sample"] - seconds["scene_for"] - seconds["_z_pass"] - seconds["semantic_boundaries"],
    }


if __name__ == "__main__":
    main()
