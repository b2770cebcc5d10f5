"""Randomness, colours and noise: scalar draws in blocks from one numpy stream, colour draws,
procedural noise and the local frames textures are computed in."""
from __future__ import annotations

import colorsys
import math

import numpy as np


class _Draws:
    """Scalar random draws from one ``numpy.random.Generator``, fetched in blocks.

    A scene takes hundreds of scalar draws and numpy's scalar calls cost about a microsecond each,
    so values are drawn 512 at a time; the stream is still a pure function of the generator's seed.
    """

    def __init__(self, rng: np.random.Generator):
        self.rng, self.block = rng, list[float]()

    def random(self) -> float:
        if not self.block:
            self.block = self.rng.random(512).tolist()
        return self.block.pop()

    def uniform(self, low: float, high: float) -> float:
        block = self.block  # the draw inlined: the commonest call of a scene's thousand-odd draws
        return low + (high - low) * (block.pop() if block else self.random())

    def integers(self, low: int, high: int) -> int:
        """Uniform integer in [low, high)."""
        return low + int((high - low) * self.random())

    def sign(self) -> float:
        return 1.0 if self.random() < 0.5 else -1.0

    def pick(self, options):
        return options[int(len(options) * self.random())]


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(h % 1.0, s, v)


def _paint(rng: _Draws, sat: float = 0.7, lo: float = 0.15, hi: float = 0.9) -> tuple:
    """A man-made colour (walls, cars, clothes, fences): any hue, mostly muted. Shared ranges."""
    return _hsv(rng.random(), sat * (1 - math.sqrt(1 - rng.random())), rng.uniform(lo, hi))


def _foliage(rng: _Draws) -> tuple:
    """Greens through olive to autumn browns: overlaps the paint range on purpose."""
    return _hsv(rng.uniform(0.06, 0.42), rng.uniform(0.25, 0.8), rng.uniform(0.18, 0.6))


def _grey(rng: _Draws, lo: float, hi: float, sat: float = 0.12) -> tuple:
    return _hsv(rng.random(), rng.uniform(0.0, sat), rng.uniform(lo, hi))


def _cell_noise(x, y, z, scale, salt: float = 0.0) -> np.ndarray:
    """Value in [0, 1) per lattice cell of size ``scale`` (scalar or per point) around points (x, y, z).

    ``y`` may be None for points on a horizontal plane.
    """
    inv = 1.0 / scale
    h = np.floor(x * inv) * 12.9898 + np.floor(z * inv) * 37.719 + salt
    if y is not None:
        h += np.floor(y * inv) * 78.233
    h = np.sin(h) * 43758.5453
    return h - np.floor(h)


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


def _to_local(vx, vz, c, s):
    """World offset -> frame with heading (cos c, sin s): local z along the heading, x to its right."""
    return vx * c - vz * s, vx * s + vz * c


def _to_world(lx, lz, c, s):
    return lx * c + lz * s, lz * c - lx * s


