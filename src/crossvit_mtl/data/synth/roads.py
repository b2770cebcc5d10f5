"""The road network: straight roads and arcs, with their coordinates along and across."""
from __future__ import annotations

import math

import numpy as np


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
        return np.where((s >= 0) & (s <= self.length), np.abs(lat), np.inf), lat, s

    def edge(self, x: float, z: float) -> float:
        """Scalar distance of a point to the road edge (negative on the road): for placing objects."""
        lat, s = self.coords(x, z)
        return abs(lat) - self.hw if 0 <= s <= self.length else math.inf

    def stretch(self, lateral: float) -> float:
        """Centreline arc length per metre along the parallel line at ``lateral``: lots of a row
        of buildings then meet at their facades, on the outside of a bend as on a straight."""
        return 1.0


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

    def frame(self, s, lateral):
        th = self.heading + self.turn * s / self.r
        rx, rz = math.cos(th), -math.sin(th)
        px, pz = self.cx - self.turn * self.r * rx, self.cz - self.turn * self.r * rz
        return px + lateral * rx, pz + lateral * rz, th

    def end(self):
        return self.frame(self.length, 0.0)


