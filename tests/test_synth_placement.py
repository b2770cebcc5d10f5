"""Placing the scenes' objects: the bounds that settle a footprint test give the answer its points give."""
from __future__ import annotations

import math

import numpy as np
import pytest

from crossvit_mtl.data.synth.primitives import _YawFrame
from crossvit_mtl.data.synth.roads import FOOTPRINT, _Arc, _Straight


def points_clear(road, x, z, half_x, half_z, heading, margin) -> bool:
    """The footprint test on its points, as the scenes have always been placed."""
    wx, wz = _YawFrame(x, z, heading).to_world(FOOTPRINT[:, 0] * half_x, FOOTPRINT[:, 1] * half_z)
    return bool((road.project(wx + x, wz + z)[0] - road.hw).min() > margin)


ROADS = {
    "straight": _Straight((0.0, -40.0), 0.0, 400.0, 5.0),
    "cross street": _Straight((-300.0, 22.0), math.pi / 2, 600.0, 4.5),
    "oblique": _Straight((3.0, 7.0), 1.2, 60.0, 4.0),
    "arc right": _Arc((0.0, 12.0), 0.0, 14.0, 1.0, math.radians(90), 5.0),
    "arc left": _Arc((0.0, 12.0), 0.0, 11.0, -1.0, math.radians(85), 4.0),
}


@pytest.mark.parametrize("name", list(ROADS))
def test_bounds_never_contradict_the_points(name):
    road = ROADS[name]
    rng = np.random.default_rng(7)
    settled = 0
    for _ in range(4000):
        # footprints around the road, many of them just touching the margin from its edge
        s = rng.uniform(-10, road.length + 10)  # past the ends too
        half_x, half_z = rng.uniform(0.05, 8), rng.uniform(0.05, 8)
        lateral = rng.choice([-1, 1]) * (road.hw + rng.uniform(0, 4) + rng.choice([half_x, half_z, 0.0]))
        x, z, heading = road.frame(s, lateral)
        heading += rng.choice([0.0, rng.uniform(-math.pi, math.pi)])
        margin = rng.uniform(0, 4)
        fr = _YawFrame(x, z, heading)
        verdict = road.footprint_clear(x, z, fr.c, fr.s, half_x, half_z, margin)
        if verdict is not None:
            settled += 1
            assert verdict == points_clear(road, x, z, half_x, half_z, heading, margin), (x, z, heading)
    assert settled > 3000  # the bounds settle most footprints: what makes placing fast


def test_a_footprint_on_its_margin_is_left_to_the_points():
    road = ROADS["straight"]
    # the near edge of the footprint lies exactly `margin` from the road's edge
    x, z, heading = road.frame(60.0, road.hw + 1.5 + 2.0)
    fr = _YawFrame(x, z, heading)
    assert road.footprint_clear(x, z, fr.c, fr.s, 2.0, 3.0, 1.5) is None
    assert road.footprint_clear(x, z, fr.c, fr.s, 2.0, 3.0, 1.0) is True
    assert road.footprint_clear(x, z, fr.c, fr.s, 2.0, 3.0, 2.0) is False
