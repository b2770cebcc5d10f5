"""Materials and their textures, shaded in batches over all pixels of one texture kind."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossvit_mtl.data.synth.draws import _cell_noise, _frac

# Shading is batched over all pixels of one texture kind, so a material is one column of numbers:
# rgb (0:3), noise cell size (3), noise contrast (4), kind (5), glass rgb (6:9), kind parameters (9:16).
# Pixel data in the shading pass is planar, (channels, pixels): numpy broadcasts that far faster.

_TEXTURE_KINDS = ("plain", "leaves", "facade", "glass_band")


@dataclass
class _Material:
    """Albedo of a primitive: a base colour and a procedural texture over its local coordinates.

    ``params``: facade (height, floor height, window spacing, phase, window width and height
    fractions, ground-floor height); glass_band (y0, y1, pillar spacing) of the window band.
    """

    rgb: tuple
    kind: str = "plain"
    scale: float = 0.3  # noise cell size (metres)
    amp: float = 0.25   # noise contrast
    glass: tuple = (0.0, 0.0, 0.0)
    params: tuple = ()

    def row(self) -> list[float]:
        pad = (0.0,) * (7 - len(self.params))
        return [*self.rgb, self.scale, self.amp, _TEXTURE_KINDS.index(self.kind), *self.glass, *self.params, *pad]


def _tex_plain(m: np.ndarray, loc: np.ndarray, axis: np.ndarray) -> np.ndarray:
    return m[0:3] * (1.0 + m[4] * (_cell_noise(loc[0], loc[1], loc[2], m[3]) - 0.5))


def _tex_leaves(m: np.ndarray, loc: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Two octaves of strong cell noise: the clumpy look of foliage."""
    x, y, z = loc[0], loc[1], loc[2]
    return m[0:3] * ((0.45 + 0.9 * _cell_noise(x, y, z, m[3])) * (0.75 + 0.5 * _cell_noise(x, y, z, 3.1 * m[3], 1.7)))


def _face_coords(loc, axis):
    """(u along the hit face, height) of box hits: the coordinates windows are laid out in."""
    return np.where(axis == 0, loc[2], loc[0]), loc[1]


def _tex_facade(m: np.ndarray, loc: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Wall with a grid of windows (some lit) above the ground floor."""
    height, floor, spacing, phase, win_w, win_h, ground = m[9:16]
    u, y = _face_coords(loc, axis)
    col, row = u / spacing + phase, y / floor
    window = ((_frac(col) < win_w) & (_frac(row) < win_h) & (y > ground) & (y < height - 0.8)
              & (axis != 1))
    out = _tex_plain(m, loc, axis)
    at = np.flatnonzero(window)  # indices, not the mask: numpy gathers them several times faster
    out[:, at] = np.take(m[6:9], at, axis=1) * (0.6 + 0.8 * _cell_noise(np.take(col, at), None, np.take(row, at), 1.0, 3.3))
    return out


def _tex_glass_band(m: np.ndarray, loc: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Vehicle sides: a band of dark windows split by pillars; roof and panels keep the paint."""
    y0, y1, pillar = m[9:12]
    u, y = _face_coords(loc, axis)
    glass = (y > y0) & (y < y1) & (_frac(u / pillar) > 0.12) & (axis != 1)
    out = _tex_plain(m, loc, axis)
    at = np.flatnonzero(glass)
    out[:, at] = np.take(m[6:9], at, axis=1)
    return out


_TEXTURES = (_tex_plain, _tex_leaves, _tex_facade, _tex_glass_band)  # in _TEXTURE_KINDS order
#: How many numbers of a material's row each texture reads (the shading pass gathers no more).
_TEXTURE_ROWS = (5, 4, 16, 12)


