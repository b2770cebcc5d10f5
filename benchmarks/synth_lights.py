"""How often a traffic light is visible in the built-in scenes, per road-layout class.

The scene class must show only through the road geometry (docs/data.md); an object placed by class
would be a second cue. For ``--samples`` consecutive scenes of a split's stream this renders the
z-buffer pass at ``--size`` and counts the scenes in which at least one pixel sees a traffic
light's housing (``_Scene.lights``), and those in which one was placed at all, per class.

    python benchmarks/synth_lights.py [--split train] [--samples 400] [--size 96x192]
"""
from __future__ import annotations

import argparse

import numpy as np

from crossvit_mtl.data.synth import SCENE_CLASSES, scene_for, synth_split_seed
from crossvit_mtl.data.synth.base import _FIRST_PRIM_ID
from crossvit_mtl.data.synth.raycast import _z_pass


def light_counts(seed: int, samples: int, height: int, width: int) -> dict[str, dict[str, int]]:
    """Per class: scenes, scenes with a light placed, scenes with a light visible."""
    counts = {name: {"scenes": 0, "placed": 0, "visible": 0} for name in SCENE_CLASSES}
    for index in range(samples):
        scene, cls = scene_for(seed, index)
        entry = counts[SCENE_CLASSES[cls]]
        entry["scenes"] += 1
        entry["placed"] += bool(scene.lights)
        if scene.lights:
            ids = _z_pass(scene, height, width)[3]
            entry["visible"] += bool(np.isin(ids, np.array(scene.lights) + _FIRST_PRIM_ID).any())
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="train", choices=("train", "val", "test"))
    parser.add_argument("--seed", type=int, default=0, help="the cache's seed (crossvit-mtl data synth --seed)")
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--size", default="96x192", help="HxW of the z-buffer pass")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    counts = light_counts(synth_split_seed(args.seed, args.split), args.samples, height, width)
    print(f"{args.split} scenes 0..{args.samples - 1} (seed {args.seed}) at {height}x{width}:")
    print("| class | scenes | a light placed | a light visible |")
    print("|---|---:|---:|---:|")
    for name, c in counts.items():
        n = max(c["scenes"], 1)
        print(f"| {name} | {c['scenes']} | {c['placed'] / n:.2f} | {c['visible'] / n:.2f} |")


if __name__ == "__main__":
    main()
