"""The road network: straight roads and arcs, with their coordinates along and across."""
from __future__ import annotations

import math

import numpy as np

#: Sample points of a unit footprint (x, z multiples of its half extents), to test that a footprint
#: stays off roads and sidewalks.
FOOTPRINT = np.stack(np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5)), -1).reshape(-1, 2)
_GRID = tuple((float(a), float(b)) for a, b in FOOTPRINT)
#: The same points, the centre first: a footprint across a road most often has its centre on it.
_CENTRE_FIRST = (_GRID[len(_GRID) // 2], *_GRID[:len(_GRID) // 2], *_GRID[len(_GRID) // 2 + 1:])
#: Slack (metres) of the bounds that settle a footprint test without evaluating its points: far
#: above the rounding of coordinates of a few hundred metres (1e-12), far below any size that matters.
_SLACK = 1e-6


class _Road:
    """A road segment: ``coords`` maps ground points to (lateral offset, arc length)."""

    length: float
    hw: float  # half width
    s_cam: float = 0.0  # arc length of the point nearest to the camera, set when the scene is built

    def coords(self, x, z):  # pragma: no cover - abstract
        raise NotImplementedError

    def project(self, x, z):
        """Distance to the centreline (inf beyond the ends), signed lateral offset (+ = right), arc length."""
        lat, s = self.coords(x, z)
        return self.distance(lat, s), lat, s

    def distance(self, lat, s):
        """Distance to the centreline (inf beyond the ends) of points with these ``coords``."""
        return np.where((s >= 0) & (s <= self.length), np.abs(lat), np.inf)

    def edge(self, x: float, z: float) -> float:
        """Scalar distance of a point to the road edge (negative on the road): for placing objects."""
        lat, s = self.coords(x, z)
        return abs(lat) - self.hw if 0 <= s <= self.length else math.inf

    def stretch(self, lateral: float) -> float:
        """Centreline arc length per metre along the parallel line at ``lateral``: lots of a row
        of buildings then meet at their facades, on the outside of a bend as on a straight."""
        return 1.0

    def footprint_clear(self, x: float, z: float, c: float, s: float, half_x: float, half_z: float,
                        margin: float) -> bool | None:
        """Whether every :data:`FOOTPRINT` point of the rectangle at (x, z) with heading (cos c,
        sin s) keeps ``margin`` from this road's edge, where bounds settle it beyond rounding:
        True, False, or None when only the points' exact coordinates can tell.

        Why: placing a scene's objects tests hundreds of footprints, and evaluating the points is
        what took most of a scene's drawing; the bounds give the answer the points would give.
        """
        return None


class _Straight(_Road):
    """Straight road segment from ``start`` along ``heading`` (radians from +z towards +x)."""

    def __init__(self, start, heading, length, half_width):
        self.x0, self.z0 = start
        self.heading, self.length, self.hw = heading, length, half_width
        self.ex, self.ez = math.sin(heading), math.cos(heading)

    def coords(self, x, z):
        vx, vz = x - self.x0, z - self.z0
        return vx * self.ez - vz * self.ex, vx * self.ex + vz * self.ez

    def frame(self, s, lateral):
        """World (x, z, heading) at arc length s and lateral offset (+ = right)."""
        return (self.x0 + s * self.ex + lateral * self.ez, self.z0 + s * self.ez - lateral * self.ex,
                self.heading)

    def end(self):
        return self.frame(self.length, 0.0)

    def footprint_clear(self, x, z, c, s, half_x, half_z, margin):
        # (lateral offset, arc length) are linear in the footprint's local coordinates: per unit
        # local x and z, and their reach over the rectangle
        lat, along = self.coords(x, z)
        ex, ez, hw, length = self.ex, self.ez, self.hw, self.length
        lat_x, lat_z = half_x * (c * ez + s * ex), half_z * (s * ez - c * ex)
        s_x, s_z = half_x * (c * ex - s * ez), half_z * (s * ex + c * ez)
        reach, reach_s = abs(lat_x) + abs(lat_z), abs(s_x) + abs(s_z)
        if along + reach_s < -_SLACK or along - reach_s > length + _SLACK:
            return True  # every point is beyond an end of the road
        nearest = abs(lat) - reach - hw  # of the corner nearest the centre line, unless it straddles
        if nearest > margin + _SLACK:
            return True
        if reach < abs(lat) and along - reach_s > _SLACK and along + reach_s < length - _SLACK:
            return False if nearest < margin - _SLACK else None  # every point lies along the road
        for a, b in _CENTRE_FIRST:  # any point that is on the road settles it, whichever is found first
            if (_SLACK < along + a * s_x + b * s_z < length - _SLACK
                    and abs(lat + a * lat_x + b * lat_z) - hw < margin - _SLACK):
                return False
        return None


class _Arc(_Road):
    """Circular road segment starting at ``start`` with ``heading``; ``turn`` +1 bends right."""

    def __init__(self, start, heading, radius, turn, sweep, half_width):
        self.heading, self.r, self.turn, self.sweep, self.hw = heading, radius, turn, sweep, half_width
        self.length = radius * sweep
        self.cx = start[0] + turn * radius * math.cos(heading)
        self.cz = start[1] - turn * radius * math.sin(heading)

    def coords(self, x, z):
        vx, vz = x - self.cx, z - self.cz
        beta = self.turn * (np.arctan2(self.turn * vz, -self.turn * vx) - self.heading)
        beta = (beta + math.pi) % (2 * math.pi) - math.pi  # angle turned since the start
        return self.turn * (self.r - np.sqrt(vx * vx + vz * vz)), beta * self.r

    def stretch(self, lateral: float) -> float:
        return self.r / max(self.r - self.turn * lateral, 1.0)

    def footprint_clear(self, x, z, c, s, half_x, half_z, margin):
        # the lateral offset is the distance to the centre circle: no point of the rectangle is
        # nearer to it than the centre's distance less the half diagonal
        vx, vz = x - self.cx, z - self.cz
        r, hw, turn, length = self.r, self.hw, self.turn, self.length
        if abs(r - math.sqrt(vx * vx + vz * vz)) - math.hypot(half_x, half_z) - hw > margin + _SLACK:
            return True
        clear = True  # or None once a point is too near its margin to tell
        for a, b in _GRID:
            lx, lz = a * half_x, b * half_z
            px, pz = vx + (lx * c + lz * s), vz + (lz * c - lx * s)
            gap = abs(r - math.sqrt(px * px + pz * pz)) - hw
            if gap > margin + _SLACK:
                continue
            beta = turn * (math.atan2(turn * pz, -turn * px) - self.heading)
            beta = (beta + math.pi) % (2 * math.pi) - math.pi
            if abs(beta) > math.pi - _SLACK:
                clear = None  # where the angle wraps round: left to the exact points
            elif beta * r < -_SLACK or beta * r > length + _SLACK:
                continue  # beyond the ends
            elif gap < margin - _SLACK and _SLACK < beta * r < length - _SLACK:
                return False
            else:
                clear = None
        return clear

    def frame(self, s, lateral):
        th = self.heading + self.turn * s / self.r
        rx, rz = math.cos(th), -math.sin(th)
        px, pz = self.cx - self.turn * self.r * rx, self.cz - self.turn * self.r * rz
        return px + lateral * rx, pz + lateral * rz, th

    def end(self):
        return self.frame(self.length, 0.0)


