"""Built-in synthetic street scenes: a procedural ray-caster that yields every task's ground truth.

Why: no data set can be downloaded on the project's machines, and a multi-task network needs
images whose segmentation, depth, normals and scene class agree exactly. Each sample is a small
3-D street (road network with lane markings and sidewalks, terrain patches, building rows with
windows, walls, fences, poles, signs, traffic lights, trees, people, cars, street clutter, sky)
ray-cast analytically: every primitive (plane, box, cylinder, ellipsoid, cut-out quad) is
intersected with all the pixels its screen box covers in one vectorised numpy pass.

Conventions
-----------
* World frame: x right, y up, z forward (metres); the ground is the plane y = 0.
* Camera: pinhole with square pixels, ``fx = fy = FOCAL * width`` and the principal point at the
  image centre (``cx = (width - 1) / 2``, ``cy = (height - 1) / 2`` in pixel-index coordinates),
  see :func:`intrinsics`. The scene does not depend on the resolution, so another ``height`` /
  ``width`` of the same aspect ratio samples the same picture finer or coarser.
* ``depth``: z-depth in metres along the optical axis (what Cityscapes and NYUv2 store), 0 where
  invalid: sky, and ground farther than :data:`Z_FAR`.
* ``normal``: unit surface normals in the camera frame, OpenCV convention (x right, y down,
  z forward), facing the camera (``n . ray < 0``); all-zero exactly where depth is 0. A horizontal
  flip of the maps must negate the x component.
* ``segmentation``: the 8 Cityscapes categories (:data:`CATEGORY_NAMES`). Void (0) is what
  Cityscapes leaves unlabelled: the ego-vehicle bonnet that some samples show and street clutter
  (bins, crates: Cityscapes' "static").
* ``classification``: the road layout, one of :data:`SCENE_CLASSES`, visible only through geometry
  (where the road goes, where the building rows open). It is ``(index + seed) % 4``, so any 4
  consecutive indices hold each class once. Colours are drawn per instance from ranges that
  overlap across categories, so no class is given away by one colour.
* Deterministic in ``(seed, index)``: the scene comes from ``numpy.random.default_rng([seed,
  index])`` and the sensor noise from a second stream, so the resolution never changes the scene.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from crossvit_mtl.data.base import DenseDataset
from crossvit_mtl.data.cache import synth_split_seed
from crossvit_mtl.data.common import CATEGORY_NAMES, CATEGORY_PALETTE, TASKS, DatasetInfo

#: Image-level classes: the layout of the road network ahead of the camera.
SCENE_CLASSES = ("straight", "curve", "t_junction", "crossroads")
STRAIGHT, CURVE, T_JUNCTION, CROSSROADS = range(len(SCENE_CLASSES))

#: Focal length as a fraction of the image width (horizontal field of view about 80 degrees).
FOCAL = 0.6
#: Ground farther than this (metres) is fogged into the sky and counted as sky / invalid depth.
Z_FAR = 150.0

VOID, FLAT, CONSTRUCTION, OBJECT, NATURE, SKY, HUMAN, VEHICLE = range(8)
#: Surface ids in the z-buffer pass: sky, ground, then primitive i as i + _FIRST_PRIM_ID;
#: the sky and the ground are also the first shading groups.
_SKY_ID, _GROUND_ID, _FIRST_PRIM_ID = 0, 1, 2
_FIRST_GROUP = 2

#: Per-channel mean and std of the rendered images in [0, 1], measured over samples 0..199 of
#: seed 0 at 128x256 with :func:`measure_stats` (re-measure when the renderer's look changes).
MEAN = (0.3572, 0.3983, 0.4083)
STD = (0.1966, 0.2188, 0.25)

F32 = np.float32


def intrinsics(height: int, width: int) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of the camera, in pixel-index coordinates (pixel j's centre is at x = j)."""
    f = FOCAL * width
    return f, f, (width - 1) / 2.0, (height - 1) / 2.0


def scene_class(seed: int, index: int) -> int:
    """The image-level class of a sample: a rotation of ``index % K``, exactly balanced."""
    return (index + seed) % len(SCENE_CLASSES)


# ----------------------------------------------------------------------------------- randomness

class _Draws:
    """Scalar random draws from one ``numpy.random.Generator``, fetched in blocks.

    A scene takes hundreds of scalar draws and numpy's scalar calls cost about a microsecond each,
    so values are drawn 512 at a time; the stream is still a pure function of the generator's seed.
    """

    def __init__(self, rng: _Draws):
        self.rng, self.block = rng, []

    def random(self) -> float:
        if not self.block:
            self.block = self.rng.random(512).tolist()
        return self.block.pop()

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.random()

    def integers(self, low: int, high: int) -> int:
        """Uniform integer in [low, high)."""
        return low + int((high - low) * self.random())

    def sign(self) -> float:
        return 1.0 if self.random() < 0.5 else -1.0

    def pick(self, options):
        return options[int(len(options) * self.random())]


# ----------------------------------------------------------------------------------- colours

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


# ----------------------------------------------------------------------------------- noise

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


# ----------------------------------------------------------------------------------- materials
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
    return m[0:3] * (1.0 + m[4] * (_cell_noise(*loc, m[3]) - 0.5))


def _tex_leaves(m: np.ndarray, loc: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Two octaves of strong cell noise: the clumpy look of foliage."""
    return m[0:3] * ((0.45 + 0.9 * _cell_noise(*loc, m[3])) * (0.75 + 0.5 * _cell_noise(*loc, 3.1 * m[3], 1.7)))


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
    out[:, window] = m[6:9, window] * (0.6 + 0.8 * _cell_noise(col[window], None, row[window], 1.0, 3.3))
    return out


def _tex_glass_band(m: np.ndarray, loc: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Vehicle sides: a band of dark windows split by pillars; roof and panels keep the paint."""
    y0, y1, pillar = m[9:12]
    u, y = _face_coords(loc, axis)
    glass = (y > y0) & (y < y1) & (_frac(u / pillar) > 0.12) & (axis != 1)
    out = _tex_plain(m, loc, axis)
    out[:, glass] = m[6:9, glass]
    return out


_TEXTURES = (_tex_plain, _tex_leaves, _tex_facade, _tex_glass_band)  # in _TEXTURE_KINDS order


# ----------------------------------------------------------------------------------- primitives

class _YawFrame:
    """Rotation about the vertical axis at (x, z): local z is the heading, local x its right."""

    def __init__(self, x: float, z: float, heading: float):
        self.x, self.z = x, z
        self.c, self.s = math.cos(heading), math.sin(heading)

    def to_local(self, vx, vz):
        return _to_local(vx, vz, self.c, self.s)

    def to_world(self, lx, lz):
        return _to_world(lx, lz, self.c, self.s)


class _Prim:
    """A solid with a category label, a material and a world bounding box.

    Rendering is deferred. ``depth(o, d, zb)`` ray-casts a crop of rays (camera centre ``o``,
    direction arrays ``d = (dx, dy, dz)`` scaled so the ray parameter is z-depth) against the crop
    ``zb`` of the z-buffer and returns (t, closer). Afterwards the class-level ``surface(g, p, o)``
    shades all pixels won by primitives of that class at once: ``g`` (8, k) holds each pixel's
    geometry (the first 8 numbers of ``row``), ``p`` (3, k) its world hit point; it returns world
    normals (3, k), local points (3, k) and the index of the face hit (k,).
    ``bounds`` = (x, z, half extent x, half extent z, y0, y1) of the axis-aligned box around it.
    """

    shape_id: int  # position of the class in _SHAPES

    def __init__(self, label: int, material: _Material, bounds: tuple, geometry: tuple):
        self.label, self.bounds, self.texture = label, bounds, material.kind
        #: Shading-pass group: pixels are sorted by it so every (shape, texture) pair is one slice.
        self.group = _FIRST_GROUP + self.shape_id * len(_TEXTURES) + _TEXTURE_KINDS.index(material.kind)
        #: Geometry padded to 8 numbers, then the material row: one table row per primitive.
        self.row = (*geometry, *(0.0,) * (8 - len(geometry)), *material.row())


class _Box(_Prim):
    """Box standing on its footprint, rotated by ``heading`` about the vertical axis (slab test)."""

    shape_id = 0

    def __init__(self, x, z, heading, half_x, half_z, y0, y1, label, material):
        fr = _YawFrame(x, z, heading)
        ex, ez = abs(fr.c) * half_x + abs(fr.s) * half_z, abs(fr.s) * half_x + abs(fr.c) * half_z
        self.frame = fr
        self.half = (half_x, (y1 - y0) / 2, half_z)
        self.yc = (y0 + y1) / 2
        super().__init__(label, material, (x, z, ex, ez, y0, y1), (x, z, fr.c, fr.s, self.yc, *self.half))

    def depth(self, o, d, zb):
        fr = self.frame
        olx, olz = fr.to_local(o[0] - fr.x, o[2] - fr.z)
        dlx, dlz = fr.to_local(d[0], d[2])
        near = far = None
        for ol, dl, h in zip((olx, o[1] - self.yc, olz), (dlx, d[1], dlz), self.half):
            a, b = (-h - ol) / dl, (h - ol) / dl
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            near = lo if near is None else np.maximum(near, lo)
            far = hi if far is None else np.minimum(far, hi)
        return near, (near <= far) & (near > 0) & (near < zb)

    @staticmethod
    def surface(g, p, o):
        x, z, c, s, yc, _, hy, _ = g
        lx, lz = _to_local(p[0] - x, p[2] - z, c, s)
        loc = np.stack((lx, p[1] - yc, lz))
        cam = np.stack((*_to_local(o[0] - x, o[2] - z, c, s), o[1] - yc))[[0, 2, 1]]
        # The face the point lies on, among those facing the camera (rounding must not pick a back face).
        facing = (np.abs(cam) > g[5:8]) & (np.sign(cam) == np.sign(loc))
        axis = np.argmax(np.where(facing, np.abs(loc) / g[5:8], -1.0), 0)
        nl = np.where(np.arange(3)[:, None] == axis, np.sign(loc), 0)
        nx, nz = _to_world(nl[0], nl[2], c, s)
        loc[1] += hy  # textures measure height from the bottom
        return np.stack((nx, nl[1], nz)), loc, axis


class _Cylinder(_Prim):
    """Vertical cylinder with flat caps: poles, trunks, sign posts."""

    shape_id = 1

    def __init__(self, x, z, radius, y0, y1, label, material):
        super().__init__(label, material, (x, z, radius, radius, y0, y1), (x, y0, z, radius, y1))
        self.x, self.z, self.r, self.y0, self.y1 = x, z, radius, y0, y1

    def depth(self, o, d, zb):
        ox, oy, oz = o[0] - self.x, o[1], o[2] - self.z
        dx, dy, dz = d
        a = dx * dx + dz * dz
        b = ox * dx + oz * dz
        disc = b * b - a * (ox * ox + oz * oz - self.r ** 2)
        t = (-b - np.sqrt(np.maximum(disc, 0))) / a
        y = oy + t * dy
        hit = (disc > 0) & (y >= self.y0) & (y <= self.y1)
        if not self.y0 <= oy <= self.y1:  # the camera sees one cap
            tc = ((self.y1 if oy > self.y1 else self.y0) - oy) / dy
            cx, cz = ox + tc * dx, oz + tc * dz
            t = np.where(hit, t, tc)
            hit |= cx * cx + cz * cz <= self.r ** 2
        return t, hit & (t > 0) & (t < zb)

    @staticmethod
    def surface(g, p, o):
        loc = p - g[0:3]
        rho = np.sqrt(loc[0] ** 2 + loc[2] ** 2)
        above, below = o[1] > g[4], o[1] < g[1]  # the camera sees the cap on its side, if any
        cap_y = np.where(above, g[4] - g[1], 0.0)
        side = ~(above | below) | (np.abs(rho - g[3]) < np.abs(loc[1] - cap_y))  # the closer surface
        n = np.stack((np.where(side, loc[0] / rho, 0), np.where(side, 0, np.where(above, 1.0, -1.0)),
                      np.where(side, loc[2] / rho, 0)))
        return n, loc, np.where(side, 0, 1)


class _Ellipsoid(_Prim):
    """Ellipsoid with a vertical axis (radii r, ry, r): tree crowns, heads, the ego bonnet."""

    shape_id = 2

    def __init__(self, x, y, z, radius, radius_y, label, material):
        self.c = (x, y, z)
        self.inv_r = (1 / radius, 1 / radius_y, 1 / radius)
        super().__init__(label, material, (x, z, radius, radius, y - radius_y, y + radius_y), (*self.c, *self.inv_r))

    def depth(self, o, d, zb):
        ox, oy, oz = ((oc - cc) * ir for oc, cc, ir in zip(o, self.c, self.inv_r))
        dx, dy, dz = (dc * ir for dc, ir in zip(d, self.inv_r))
        a = dx * dx + dy * dy + dz * dz
        b = ox * dx + oy * dy + oz * dz
        disc = b * b - a * (ox * ox + oy * oy + oz * oz - 1.0)
        t = (-b - np.sqrt(np.maximum(disc, 0))) / a
        return t, (disc > 0) & (t > 0) & (t < zb)

    @staticmethod
    def surface(g, p, o):
        loc = p - g[0:3]
        n = loc * g[3:6] ** 2  # gradient of the implicit function
        n /= np.sqrt(n[0] ** 2 + n[1] ** 2 + n[2] ** 2)
        return n, loc, np.zeros(loc.shape[1], np.int64)


class _Quad(_Prim):
    """Vertical zero-thickness rectangle with a cut-out pattern: fences, sign plates.

    ``keep(lx, ly)`` says which points of the rectangle are solid, so one primitive draws a whole
    fence of bars or a round plate; both sides use the normal that faces the camera.
    """

    shape_id = 3

    def __init__(self, x, z, heading, half_w, y0, y1, label, material, keep=None):
        fr = _YawFrame(x, z, heading)
        super().__init__(label, material, (x, z, abs(fr.c) * half_w, abs(fr.s) * half_w, y0, y1),
                         (x, z, fr.c, fr.s, y0))
        self.frame, self.hw, self.y0, self.y1, self.keep = fr, half_w, y0, y1, keep

    def depth(self, o, d, zb):
        fr = self.frame
        olx, olz = fr.to_local(o[0] - fr.x, o[2] - fr.z)
        dlx, dlz = fr.to_local(d[0], d[2])
        t = -olz / dlz
        lx = olx + t * dlx
        ly = o[1] - self.y0 + t * d[1]
        closer = (t > 0) & (t < zb) & (np.abs(lx) <= self.hw) & (ly >= 0) & (ly <= self.y1 - self.y0)
        if self.keep is not None:
            rows, cols = np.nonzero(closer)
            drop = ~self.keep(lx[rows, cols], ly[rows, cols])
            closer[rows[drop], cols[drop]] = False
        return t, closer

    @staticmethod
    def surface(g, p, o):
        x, z, c, s, y0 = g[:5]
        lx, _ = _to_local(p[0] - x, p[2] - z, c, s)
        facing = np.sign(_to_local(o[0] - x, o[2] - z, c, s)[1])  # side of the plane the camera is on
        nx, nz = _to_world(0.0, facing, c, s)
        zero = np.zeros_like(lx)
        return np.stack((nx, zero, nz)), np.stack((lx, p[1] - y0, zero)), np.full(len(lx), 2)


_SHAPES = (_Box, _Cylinder, _Ellipsoid, _Quad)


def _bars(spacing: float, fill: float, rail: float, height: float):
    """Cut-out of a fence: vertical bars plus top, middle and bottom rails."""
    def keep(lx, ly):
        return ((_frac(lx / spacing) < fill) | (ly < rail) | (ly > height - rail)
                | (np.abs(ly - height / 2) < rail / 2))
    return keep


def _plate(shape: str, half: float):
    """Cut-out of a traffic-sign plate of size 2*half: disc, triangle, diamond or square."""
    def keep(lx, ly):
        ly = ly - half
        if shape == "disc":
            return lx * lx + ly * ly <= half * half
        if shape == "triangle":
            return np.abs(lx) <= (half - ly) / 2
        if shape == "diamond":
            return np.abs(lx) + np.abs(ly) <= half
        return np.ones(lx.shape, bool)
    return keep


# ----------------------------------------------------------------------------------- roads

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


# ----------------------------------------------------------------------------------- scene

@dataclass
class _Scene:
    """Everything a render needs; built from the random stream alone, never from the resolution."""

    cam: tuple[float, float, float]
    yaw: float
    pitch: float
    roads: list
    sidewalk: float
    ground: dict[str, Any]
    prims: list[_Prim]
    sun: np.ndarray
    sun_gain: float
    ambient: float
    tint: np.ndarray
    sky: tuple[np.ndarray, np.ndarray]
    clouds: list[float]
    fog: float
    noise: float


#: Arc length of the camera along the main road, which starts behind it.
CAM_S = 40.0
#: Sample points of a unit footprint, to test that a footprint stays off roads and sidewalks.
_FOOTPRINT = np.stack(np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5)), -1).reshape(-1, 2)


class _Builder:
    """Places the scene's objects along the road network, keeping them off roads and each other."""

    def __init__(self, rng: _Draws, roads: list, sidewalk: float, cam):
        self.rng, self.roads, self.sw, self.cam = rng, roads, sidewalk, cam
        self.prims: list[_Prim] = []
        self.taken = [(cam[0], cam[2], 3.0)]  # (x, z, radius) of placed objects; the ego vehicle first

    # -- placement checks
    def kerb_distance(self, x: float, z: float) -> float:
        """Signed distance to the nearest road edge (negative on a road)."""
        return min(road.edge(x, z) for road in self.roads)

    def in_view(self, x: float, z: float, radius: float) -> bool:
        """Whether a disc can appear in the picture (a cone wider than any camera yaw allows)."""
        ahead = z - self.cam[2]
        return ahead > -radius and abs(x - self.cam[0]) < 1.6 * max(ahead, 0.0) + radius

    def claim(self, x, z, radius) -> bool:
        """Reserve a disc of ground for an object unless it overlaps one already placed."""
        if any((tx - x) ** 2 + (tz - z) ** 2 < (tr + radius) ** 2 for tx, tz, tr in self.taken):
            return False
        self.taken.append((x, z, radius))
        return True

    def off_road(self, x, z, half_x, half_z, heading, margin) -> bool:
        """Whether a rectangular footprint keeps ``margin`` from every road edge."""
        wx, wz = _YawFrame(x, z, heading).to_world(_FOOTPRINT[:, 0] * half_x, _FOOTPRINT[:, 1] * half_z)
        return all((road.project(wx + x, wz + z)[0] - road.hw).min() > margin for road in self.roads)

    def add(self, *prims: _Prim):
        self.prims.extend(prims)

    # -- objects
    def building(self, road, s, side, width, setback) -> float:
        """A building on the lot starting at arc length ``s``; returns the arc length the lot took.

        A lot that would reach onto a road or a sidewalk (at a corner) is narrowed until it fits,
        so building rows run on without gaps up to the cross street: the only openings in a row
        are the roads themselves, which is what makes a junction recognisable.
        """
        rng = self.rng
        depth, height = rng.uniform(8, 16), rng.pick((rng.uniform(6, 12), rng.uniform(10, 28)))
        lateral = side * (road.hw + self.sw + setback + depth / 2)
        front = side * (road.hw + self.sw + setback)
        for lot in (width, 0.6 * width, 0.35 * width, 2.5):
            step = lot * road.stretch(front)
            x, z, heading = road.frame(s + step / 2, lateral)
            if self.off_road(x, z, lot / 2, depth / 2, heading, self.sw):
                break
        else:
            return 1.0
        floor = rng.uniform(2.8, 3.6)
        windows = (height, floor, rng.uniform(1.8, 4.0), rng.random(), rng.uniform(0.3, 0.7),
                   rng.uniform(0.35, 0.65), rng.pick((0.0, floor)))
        mat = _Material(_paint(rng, 0.5, 0.3, 0.9), "facade", rng.uniform(0.2, 0.6), rng.uniform(0.05, 0.3),
                        _grey(rng, 0.05, 0.45, 0.3), windows)
        self.add(_Box(x, z, heading, lot / 2, depth / 2, 0.0, height, CONSTRUCTION, mat))
        return step

    def tree(self, x, z, margin):
        rng = self.rng
        if not self.in_view(x, z, 4.0) or self.kerb_distance(x, z) < margin or not self.claim(x, z, 1.0):
            return
        trunk_h, crown = rng.uniform(1.5, 3.5), rng.uniform(1.2, 3.0)
        crown_y = rng.uniform(0.8, 1.6) * crown
        trunk = _Material(_hsv(rng.uniform(0.02, 0.12), rng.uniform(0.2, 0.6), rng.uniform(0.12, 0.4)),
                          scale=0.1, amp=0.5)
        leaves = _Material(_foliage(rng), "leaves", rng.uniform(0.15, 0.4))
        self.add(_Cylinder(x, z, rng.uniform(0.1, 0.3), 0.0, trunk_h + crown_y * 0.5, NATURE, trunk),
                 _Ellipsoid(x, trunk_h + crown_y, z, crown, crown_y, NATURE, leaves))

    def pole(self, road, s, side):
        rng = self.rng
        x, z, heading = road.frame(s, side * (road.hw + rng.uniform(0.3, 0.8)))
        if not self.in_view(x, z, 3.0) or not self.claim(x, z, 0.5):
            return
        height = rng.uniform(4.5, 9.0)
        mat = _Material(_grey(rng, 0.2, 0.75), scale=0.2, amp=0.15)
        self.add(_Cylinder(x, z, rng.uniform(0.07, 0.16), 0.0, height, OBJECT, mat))
        if rng.random() < 0.6:  # street-lamp arm reaching over the road
            arm = rng.uniform(1.0, 2.5)
            ax, az = _YawFrame(x, z, heading).to_world(-side * arm / 2, 0.0)
            self.add(_Box(x + ax, z + az, heading, arm / 2, 0.08, height - 0.25, height - 0.05, OBJECT, mat))

    def sign(self, road, s, side, traffic_light=False):
        rng = self.rng
        x, z, heading = road.frame(s, side * (road.hw + rng.uniform(0.3, 1.0)))
        if self.kerb_distance(x, z) < 0.2 or not self.claim(x, z, 0.6):
            return
        post = _Material(_grey(rng, 0.3, 0.8), amp=0.1)
        height = rng.uniform(2.0, 3.2)
        facing = heading + (math.pi if side > 0 else 0.0)  # plates face oncoming traffic
        self.add(_Cylinder(x, z, rng.uniform(0.04, 0.07), 0.0, height, OBJECT, post))
        if traffic_light:
            housing = _Material(_grey(rng, 0.05, 0.35), scale=0.1, amp=0.3)
            self.add(_Box(x, z, facing, 0.18, 0.15, height, height + 0.9, OBJECT, housing))
            return
        half = rng.uniform(0.3, 0.5)
        shape = rng.pick(("disc", "triangle", "diamond", "square"))
        plate = _Material(_paint(rng, 1.0, 0.3, 0.95), scale=0.15, amp=0.2)
        fx, fz = _YawFrame(x, z, facing).to_world(0.0, 0.08)
        self.add(_Quad(x + fx, z + fz, facing, half, height, height + 2 * half, OBJECT, plate,
                       _plate(shape, half)))

    def car(self, x, z, heading):
        rng = self.rng
        big = rng.random() < 0.2
        length = rng.uniform(6.0, 11.0) if big else rng.uniform(3.8, 5.0)
        width = rng.uniform(2.2, 2.6) if big else rng.uniform(1.65, 2.0)
        height = rng.uniform(2.6, 3.3) if big else rng.uniform(1.35, 1.7)
        if not self.claim(x, z, length / 2):
            return
        fr = _YawFrame(x, z, heading)
        paint = _paint(rng, 0.9, 0.1, 0.95)
        glass = _grey(rng, 0.03, 0.3, 0.3)
        wheels = _Material(_grey(rng, 0.03, 0.15), scale=0.1, amp=0.3)
        for u in (-0.33, 0.33):
            ax, az = fr.to_world(0.0, u * length)
            self.add(_Box(x + ax, z + az, heading, width / 2 + 0.01, 0.33, 0.0, 0.62, VEHICLE, wheels))
        if big:
            mat = _Material(paint, "glass_band", 0.5, 0.1, glass, (0.5 * height, 0.85 * height, rng.uniform(1.0, 1.6)))
            self.add(_Box(x, z, heading, width / 2, length / 2, 0.3, height, VEHICLE, mat))
            return
        body_top = 0.3 + 0.5 * (height - 0.3)
        self.add(_Box(x, z, heading, width / 2, length / 2, 0.3, body_top, VEHICLE,
                      _Material(paint, scale=0.5, amp=0.08)))
        cab_len = length * rng.uniform(0.45, 0.6)
        cx, cz = fr.to_world(0.0, -0.08 * length)
        cabin = _Material(paint, "glass_band", 0.5, 0.08, glass, (0.0, 0.8 * (height - body_top), cab_len / 2))
        self.add(_Box(x + cx, z + cz, heading, 0.44 * width, cab_len / 2, body_top, height, VEHICLE, cabin))

    def person(self, x, z):
        rng = self.rng
        if not self.claim(x, z, 0.4):
            return
        h = rng.uniform(1.5, 1.95)
        heading = rng.uniform(0, 2 * math.pi)
        legs = _Material(_paint(rng, 0.6, 0.05, 0.7), scale=0.1, amp=0.2)
        top = _Material(_paint(rng, 0.9, 0.1, 0.95), scale=0.1, amp=0.2)
        skin = _Material(_hsv(rng.uniform(0.02, 0.1), rng.uniform(0.2, 0.6), rng.uniform(0.25, 0.9)), amp=0.1)
        self.add(_Box(x, z, heading, 0.17, 0.11, 0.0, 0.48 * h, HUMAN, legs),
                 _Box(x, z, heading, 0.22, 0.13, 0.48 * h, 0.84 * h, HUMAN, top),
                 _Ellipsoid(x, 0.92 * h, z, 0.1, 0.12, HUMAN, skin))

    def clutter(self, x, z):
        rng = self.rng
        size = rng.uniform(0.3, 0.7)
        if self.kerb_distance(x, z) < size or not self.claim(x, z, size + 0.2):
            return
        mat = _Material(_paint(rng, 0.8, 0.1, 0.8), scale=0.1, amp=0.3)
        self.add(_Box(x, z, rng.uniform(0, math.pi), size, size * rng.uniform(0.6, 1.0), 0.0,
                      rng.uniform(0.6, 1.4), VOID, mat))

    def barrier(self, road, s0, s1, side, lateral):
        """Wall or bar fence along a road side, where no building stands."""
        rng = self.rng
        x, z, heading = road.frame((s0 + s1) / 2, side * lateral)
        half = (s1 - s0) / 2
        if half < 0.5 or not self.off_road(x, z, 0.1, half, heading, 0.3):
            return
        height = rng.uniform(0.8, 2.2)
        mat = _Material(_paint(rng, 0.5, 0.15, 0.85), scale=rng.uniform(0.1, 0.4), amp=0.25)
        if rng.random() < 0.5:
            self.add(_Box(x, z, heading, 0.15, half, 0.0, height, CONSTRUCTION, mat))
        else:
            keep = _bars(rng.uniform(0.1, 0.3), rng.uniform(0.25, 0.55), 0.06, height)
            self.add(_Quad(x, z, heading + math.pi / 2, half, 0.0, height, CONSTRUCTION, mat, keep))

    def bonnet(self, cam, yaw):
        """The ego vehicle's bonnet: a flat dome ahead of and below the camera, labelled void."""
        rng = self.rng
        mat = _Material(_paint(rng, 0.8, 0.05, 0.8), scale=0.5, amp=0.05)
        ahead, drop, radius, ry = rng.uniform(0.3, 1.0), rng.uniform(0.55, 0.8), rng.uniform(2.0, 2.6), 0.5
        self.add(_Ellipsoid(cam[0] + ahead * math.sin(yaw), cam[1] - drop - ry, cam[2] + ahead * math.cos(yaw),
                            radius, ry, VOID, mat))


def _road_network(rng: _Draws, cls: int, hw: float, sw: float) -> list:
    """The layout that defines the scene class. The camera drives on roads[0] at z = 0.

    Every layout changes what lies 10-35 m ahead, where it covers a large share of the picture:
    a straight street runs on to the horizon; a curve turns 80-100 degrees, so a building row
    closes the view; a T-junction ends the street at a cross street (seen from its stem: arms to
    both sides, buildings ahead); crossroads have the arms and the street running on.
    """
    if cls == STRAIGHT:
        return [_Straight((0.0, -CAM_S), 0.0, 400.0, hw)]
    if cls == CURVE:
        bend = rng.uniform(8, 16)
        first = _Straight((0.0, -CAM_S), 0.0, CAM_S + bend, hw)
        arc = _Arc(first.end()[:2], 0.0, rng.uniform(hw + sw + 4, 20), rng.sign(),
                   math.radians(rng.uniform(80, 100)), hw)
        x, z, heading = arc.end()
        return [first, arc, _Straight((x, z), heading, 300.0, hw)]
    hw2 = hw * rng.uniform(0.8, 1.2)
    zj = rng.uniform(10, 18) + hw2  # the cross street's centre line; its near edge 10-18 m ahead
    cross = _Straight((-300.0, zj), math.pi / 2, 600.0, hw2)
    return [_Straight((0.0, -CAM_S), 0.0, CAM_S + zj if cls == T_JUNCTION else 400.0, hw), cross]


def _roadside(b: _Builder, rng: _Draws, road, s_lo: float, s_hi: float, side: float):
    """One side of a road: an unbroken row of buildings (set back by a front yard or not), street
    trees on the sidewalk, lamp posts, and low walls or fences in front of some yards."""
    sw = b.sw
    if rng.random() < 0.4:
        gap = rng.uniform(9, 16)
        for s in np.arange(s_lo + rng.uniform(0, gap), s_hi, gap).tolist():
            x, z, _ = road.frame(s, side * (road.hw + sw * rng.uniform(0.55, 0.8)))
            b.tree(x, z, 0.5)
    s = s_lo + rng.uniform(-8, 0)
    while s < s_hi:
        width = rng.uniform(6, 22)
        setback = rng.uniform(1, 5) * (rng.random() < 0.5)
        if b.in_view(*road.frame(s + width / 2, side * (road.hw + sw + 8))[:2], width / 2 + 10):
            step = b.building(road, s, side, width, setback)
            if setback > 2 and rng.random() < 0.4:
                b.barrier(road, s, s + step, side, road.hw + sw + rng.uniform(0.2, 0.6 * setback))
            elif setback > 2 and rng.random() < 0.3:
                x, z, _ = road.frame(s + step / 2, side * (road.hw + sw + setback / 2))
                b.tree(x, z, sw + 0.5)
        else:
            step = width
        s += step
    if rng.random() < 0.6:
        gap = rng.uniform(15, 35)
        for s in np.arange(s_lo + rng.uniform(5, gap), s_hi, gap).tolist():
            b.pole(road, s, side)


def _traffic(b: _Builder, rng: _Draws, cls: int):
    """Cars in lanes and parked, people on sidewalks (some crossing), signs, lights, clutter."""
    roads, sw = b.roads, b.sw
    main = roads[0]

    def spot(lo, hi):
        """A road and an arc length on it: lo..hi metres ahead on the main road, near the camera elsewhere."""
        if rng.random() < 0.6:
            return main, CAM_S + rng.uniform(lo, hi)
        road = rng.pick(roads)
        return road, min(max(road.s_cam + rng.uniform(-0.5, 0.5) * hi, 0.0), road.length)

    for _ in range(rng.integers(2, 10)):
        road, s = spot(5, 60)
        side = rng.sign()
        x, z, heading = road.frame(s, side * road.hw * rng.pick((0.5, 0.5, 0.78)))
        if b.kerb_distance(x, z) < -1.0:
            b.car(x, z, heading + (0.0 if side > 0 else math.pi) + rng.uniform(-0.08, 0.08))
    for _ in range(rng.integers(3, 14)):
        road, s = spot(2, 30)
        if rng.random() < 0.15:
            lat = rng.uniform(-road.hw, road.hw)
        else:
            lat = rng.sign() * (road.hw + rng.uniform(0.4, sw + 2.0))
        b.person(*road.frame(s, lat)[:2])
    for _ in range(rng.integers(1, 4)):
        b.sign(*spot(2, 45), rng.sign())
    junction = cls in (T_JUNCTION, CROSSROADS)
    if junction or rng.random() < 0.3:
        s_light = CAM_S + (roads[1].z0 - roads[1].hw - 2 if junction else rng.uniform(10, 35))
        for side in (-1, 1):
            if rng.random() < 0.7:
                b.sign(main, s_light, side, traffic_light=True)
    for _ in range(rng.integers(0, 4)):
        road, s = spot(0, 40)
        b.clutter(*road.frame(s, rng.sign() * (road.hw + rng.uniform(0.5, sw)))[:2])


def _build_scene(rng: _Draws, cls: int) -> _Scene:
    hw, sw = rng.uniform(3.5, 7.0), rng.uniform(1.5, 4.0)
    roads = _road_network(rng, cls, hw, sw)
    cam = (rng.uniform(-0.5, 0.5) * hw, rng.uniform(1.2, 2.0), 0.0)
    for road in roads:
        road.s_cam = min(max(road.coords(cam[0], cam[2])[1], 0.0), road.length)  # nearest to the camera
    yaw, pitch = math.radians(rng.uniform(-10, 10)), math.radians(rng.uniform(-9, 1))
    b = _Builder(rng, roads, sw, cam)
    for road in roads:
        for side in (-1.0, 1.0):
            _roadside(b, rng, road, max(road.s_cam - 100, 0.0), min(road.s_cam + 120, road.length), side)
    _traffic(b, rng, cls)
    if rng.random() < 0.4:
        b.bonnet(cam, yaw)
    return _Scene(cam=cam, yaw=yaw, pitch=pitch, roads=roads, sidewalk=sw, ground=_ground_look(rng),
                  prims=b.prims, **_lighting(rng))


#: Ground surface kinds, in the column order of the ground colour table.
_PAVEMENT, _ROAD, _MARKING, _KERB, _SIDEWALK, _TERRAIN = range(6)
#: Per kind: contrast of fine grain, of coarse blotches, and darkening of tile joints.
_GROUND_TEXTURE = np.array(((0.0, 0.25, 0.2, 0.0, 0.0, 0.7),
                            (0.4, 0.2, 0.0, 0.0, 0.0, 0.4),
                            (0.0, 0.0, 0.0, 0.0, -0.35, 0.0)), F32)


def _ground_look(rng: _Draws) -> dict[str, Any]:
    colours = (_grey(rng, 0.25, 0.65, 0.25), _grey(rng, 0.18, 0.45),
               _hsv(rng.uniform(0.1, 0.16), rng.pick((0.0, 0.0, 0.7)), rng.uniform(0.7, 0.95)),
               _grey(rng, 0.5, 0.85), _grey(rng, 0.35, 0.75, 0.25), _foliage(rng))
    return dict(
        colours=np.array(colours, F32).T, tile=rng.uniform(0.3, 0.8), dash=rng.uniform(5, 10),
        terrain_cut=rng.uniform(-0.8, 0.6),
        waves=[(rng.uniform(0.05, 0.35) * rng.sign(), rng.uniform(0.05, 0.35) * rng.sign(), rng.uniform(0, 6.3))
               for _ in range(3)],
    )


def _lighting(rng: _Draws) -> dict[str, Any]:
    elev, azim = math.radians(rng.uniform(15, 70)), rng.uniform(0, 2 * math.pi)
    overcast = rng.random() < 0.3
    zenith = np.array(_hsv(rng.uniform(0.55, 0.62), rng.uniform(0.0, 0.15) if overcast else rng.uniform(0.3, 0.7),
                           rng.uniform(0.55, 0.95)), F32)
    horizon = np.clip(zenith + rng.uniform(0.1, 0.35), 0, 1).astype(F32)
    return dict(
        sun=np.array((math.cos(elev) * math.sin(azim), math.sin(elev), math.cos(elev) * math.cos(azim)), F32),
        sun_gain=rng.uniform(0.2, 0.4) if overcast else rng.uniform(0.5, 0.9),
        ambient=rng.uniform(0.35, 0.6), tint=np.array(_hsv(rng.uniform(0.05, 0.6), rng.uniform(0, 0.12), 1.0), F32),
        sky=(horizon, zenith), clouds=[rng.uniform(0.5, 2.0) for _ in range(3)],
        fog=rng.uniform(60, 300), noise=rng.uniform(1.0, 4.0),
    )


# ----------------------------------------------------------------------------------- render

def _rotation(yaw: float, pitch: float) -> np.ndarray:
    """Camera (OpenCV: x right, y down, z forward) to world (x right, y up, z forward)."""
    cp, sp, cy, sy = math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    flip = np.diag((1.0, -1.0, 1.0))
    rx = np.array(((1, 0, 0), (0, cp, sp), (0, -sp, cp)))
    ry = np.array(((cy, 0, sy), (0, 1, 0), (-sy, 0, cy)))
    return (ry @ rx @ flip).astype(F32)


_BOX_CORNERS = np.array([(i, j, k) for i in (-1, 1) for j in (0, 1) for k in (-1, 1)], F32)


def _screen_boxes(prims: list[_Prim], cam, rot, k, height, width):
    """Pixel rectangles (r0, r1, c0, c1), nearest z and index of every primitive the camera sees.

    All bounding boxes are projected at once; the rectangles are conservative, and a box that
    straddles the camera plane gets the whole image. Sorted near to far for occlusion culling.
    """
    if not prims:
        return []
    x, z, ex, ez, y0, y1 = np.array([p.bounds for p in prims], F32).T
    cx, cy, cz = _BOX_CORNERS.T[:, None, :]
    corners = np.stack((x[:, None] + cx * ex[:, None], y0[:, None] + cy * (y1 - y0)[:, None],
                        z[:, None] + cz * ez[:, None]), -1)
    pc = (corners - cam) @ rot  # world -> camera (rot is orthonormal)
    depth = pc[..., 2]
    fx, fy, px, py = k
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = fx * pc[..., 0] / depth + px, fy * pc[..., 1] / depth + py
    straddle = depth.min(1) <= 0.05
    c0 = np.where(straddle, 0, np.clip(np.floor(u.min(1) + 0.5), 0, width)).astype(int)
    c1 = np.where(straddle, width, np.clip(np.floor(u.max(1) + 1.5), 0, width)).astype(int)
    r0 = np.where(straddle, 0, np.clip(np.floor(v.min(1) + 0.5), 0, height)).astype(int)
    r1 = np.where(straddle, height, np.clip(np.floor(v.max(1) + 1.5), 0, height)).astype(int)
    znear = np.maximum(depth.min(1), 0)
    seen = np.nonzero((depth.max(1) > 0.05) & (c1 > c0) & (r1 > r0))[0]
    seen = seen[np.argsort(znear[seen], kind="stable")]
    return [(int(r0[i]), int(r1[i]), int(c0[i]), int(c1[i]), float(znear[i]), int(i)) for i in seen]


def _ground(scene: _Scene, x: np.ndarray, z: np.ndarray):
    """Labels (k,) and albedo (3, k) of ground points: road, markings, kerb, sidewalk, pavement, terrain."""
    g = scene.ground
    edge, lat, along, n_on_road = None, None, None, 0
    for road in scene.roads:
        dist, la, s = road.project(x, z)
        e = dist - road.hw
        n_on_road = n_on_road + (e < 0)
        if edge is None:
            edge, lat, along = e, la, s
        else:
            closer = e < edge
            edge, lat, along = np.where(closer, e, edge), np.where(closer, la, lat), np.where(closer, s, along)
    wave = sum(np.sin(a * x + c * z + ph) for a, c, ph in g["waves"]) / 3
    kind = np.where(wave > g["terrain_cut"], _TERRAIN, _PAVEMENT)
    kind[edge < scene.sidewalk] = _SIDEWALK
    kind[(edge >= 0) & (edge < 0.25)] = _KERB
    kind[edge < 0] = _ROAD
    kind[(n_on_road == 1) & (  # markings, except where roads overlap: centre dashes, edge lines
        ((np.abs(lat) < 0.08) & (_frac(along / g["dash"]) < 0.45)) | ((edge < -0.25) & (edge > -0.4)))] = _MARKING
    tiles = (_frac(x / g["tile"]) < 0.07) | (_frac(z / g["tile"]) < 0.07)
    grain, blotch = _cell_noise(x, None, z, 0.08) - 0.5, _cell_noise(x, None, z, 1.3, 5.1) - 0.5
    a, b, c = np.take(_GROUND_TEXTURE, kind, axis=1)
    albedo = np.take(g["colours"], kind, axis=1) * (1 + a * grain + b * blotch + c * tiles)
    return np.where(kind == _TERRAIN, NATURE, FLAT), albedo


def _sky(scene: _Scene, d: np.ndarray) -> np.ndarray:
    """Sky colour (3, k) per ray (3, k): horizon-to-zenith gradient and cloud bands on a high plane."""
    horizon, zenith = scene.sky
    dx, dy, dz = d
    w = np.clip(dy / np.sqrt(dx * dx + dy * dy + dz * dz) * 2.5, 0, 1)
    col = horizon[:, None] + (zenith - horizon)[:, None] * w
    h = 1.0 / np.maximum(dy, 0.02)
    a, b, c = scene.clouds
    cloud = np.clip(np.sin(a * dx * h) * np.sin(b * dz * h + c) - 0.2, 0, 1) * np.sqrt(1 - w)
    return col + (1.0 - col) * (0.7 * cloud)


def _camera_rays(scene: _Scene, height: int, width: int):
    """World ray directions (3, height, width), scaled so the ray parameter is z-depth, and the rotation."""
    fx, fy, cx, cy = intrinsics(height, width)
    rot = _rotation(scene.yaw, scene.pitch)
    u = (np.arange(width, dtype=F32) - cx) / fx
    v = (np.arange(height, dtype=F32)[:, None] - cy) / fy
    d = np.stack([np.broadcast_to(r[0] * u + r[1] * v + r[2], (height, width)) for r in rot])
    return d, rot


def _z_pass(scene: _Scene, height: int, width: int):
    """Ray directions (3, H, W), the camera rotation, the z-buffer and the id of the surface each
    pixel sees (sky, ground, or a primitive)."""
    d, rot = _camera_rays(scene, height, width)
    dx, dy, dz = d
    o = scene.cam
    # Without roll each row has one ground depth, so the ground is a block of rows.
    zbuf = np.full((height, width), np.inf, F32)
    ids = np.full((height, width), _SKY_ID, np.int16)
    t_row = np.where(dy[:, 0] < 0, -o[1] / np.minimum(dy[:, 0], -1e-9), np.inf)
    ground_rows = t_row < Z_FAR
    zbuf[ground_rows] = t_row[ground_rows, None]
    ids[ground_rows] = _GROUND_ID
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for r0, r1, c0, c1, znear, i in _screen_boxes(scene.prims, np.array(o, F32), rot,
                                                       intrinsics(height, width), height, width):
            zb = zbuf[r0:r1, c0:c1]
            if znear >= zb.max():
                continue  # hidden behind what is already drawn
            t, closer = scene.prims[i].depth(o, (dx[r0:r1, c0:c1], dy[r0:r1, c0:c1], dz[r0:r1, c0:c1]), zb)
            np.copyto(zb, t, where=closer)
            np.copyto(ids[r0:r1, c0:c1], i + _FIRST_PRIM_ID, where=closer)
    return d, rot, zbuf, ids


# ----------------------------------------------------------------------------------- class cues

#: The elements that show a scene's layout, each measured as the share of the picture it covers
#: (:func:`layout_cues`): ``left`` / ``right`` the surface of the other roads (a cross street's
#: arms, the road of a bend) beyond the main street's kerbs; ``beyond`` the
#: main street farther than :data:`ROAD_BEYOND` metres; ``closing`` the buildings standing across
#: the main street's corridor (road and sidewalks), which close the view.
CUES = ("left", "right", "beyond", "closing")
#: Every rendered scene shows each cue its class needs over at least this share of the picture,
#: measured at :data:`CUE_SIZE`: a draw that does not (a truck hiding an arm, a yaw that turns
#: one away) is replaced by the next draw of its random stream. What a layout lacks (arms in a
#: straight street, a closing row at crossroads) is absent by construction, so the cues present
#: determine the class (:func:`layout_from_cues`).
MIN_CUE_SHARE = {"left": 0.005, "right": 0.005, "beyond": 0.001, "closing": 0.04}
CUE_SIZE = (64, 128)
#: Depth (m) past every junction's far edge, beyond which the main street counts as running on.
ROAD_BEYOND = 40.0


def layout_cues(scene: _Scene, height: int, width: int) -> dict[str, float]:
    """Share of the picture each of :data:`CUES` covers when ``scene`` is seen at ``height`` x ``width``."""
    d, _, zbuf, ids = _z_pass(scene, height, width)
    hit = ids != _SKY_ID
    t, kind = zbuf[hit], ids[hit]
    x, z = scene.cam[0] + t * d[0][hit], scene.cam[2] + t * d[2][hit]
    ground = kind == _GROUND_ID
    building = np.array([False, False, *(q.texture == "facade" for q in scene.prims)])[kind]
    main = scene.roads[0]
    lat = main.coords(x, z)[0]
    others = [r.project(x, z)[0] <= r.hw for r in scene.roads[1:]]
    side_roads = ground & np.logical_or.reduce(others) & (np.abs(lat) > main.hw + 0.5) if others \
        else np.zeros_like(ground)
    counts = {"left": (side_roads & (lat < 0)).sum(), "right": (side_roads & (lat > 0)).sum(),
              "beyond": (ground & (main.project(x, z)[0] <= main.hw) & (t >= ROAD_BEYOND)).sum(),
              "closing": (building & (np.abs(lat) <= main.hw + scene.sidewalk)).sum()}
    return {name: int(count) / (height * width) for name, count in counts.items()}


def layout_from_cues(cues: dict[str, float]) -> int:
    """The class the visible cues spell: arms on both sides are a junction (a T when buildings close
    the view, crossroads when the street runs on), a road to one side is a bend, none a straight."""
    sides = (cues["left"] > 0) + (cues["right"] > 0)
    if sides == 2:
        return T_JUNCTION if cues["closing"] > 0 else CROSSROADS
    return CURVE if sides == 1 else STRAIGHT


def shows_its_class(cues: dict[str, float], cls: int) -> bool:
    """Whether every cue class ``cls`` needs covers its :data:`MIN_CUE_SHARE`."""
    enough = {name: cues[name] >= MIN_CUE_SHARE[name] for name in CUES}
    return {STRAIGHT: enough["beyond"],
            CURVE: (enough["left"] or enough["right"]) and enough["closing"],
            T_JUNCTION: enough["left"] and enough["right"] and enough["closing"],
            CROSSROADS: enough["left"] and enough["right"] and enough["beyond"]}[cls]


def scene_for(seed: int, index: int) -> tuple[_Scene, int]:
    """The scene of sample ``index`` of stream ``seed`` and its class: the first draw that shows its
    class (:func:`shows_its_class`, checked at :data:`CUE_SIZE`, so the scene never depends on the
    resolution it is rendered at)."""
    cls = scene_class(seed, index)
    for attempt in range(100):
        scene = _build_scene(_Draws(np.random.default_rng([seed, index, 0, attempt])), cls)
        if shows_its_class(layout_cues(scene, *CUE_SIZE), cls):
            return scene, cls
    raise RuntimeError(f"no draw of class {SCENE_CLASSES[cls]!r} shows its cues (seed {seed}, index {index})")


def render_sample(seed: int, index: int, height: int = 128, width: int = 256) -> dict[str, Any]:
    """Render sample ``index`` of stream ``seed``: image, segmentation, depth, normal, classification."""
    scene, cls = scene_for(seed, index)
    d, rot, zbuf, ids = _z_pass(scene, height, width)
    o = scene.cam
    cam = np.array(o, F32)[:, None]

    # Shading pass. Pixels are sorted by group (sky, ground, then shape class x texture kind), so
    # each group is one contiguous slice shaded in one batch; the result is unsorted at the end.
    n_pix = height * width
    flat_ids, z = ids.ravel(), zbuf.ravel()
    prims = scene.prims
    groups = np.array([_SKY_ID, _GROUND_ID, *(q.group for q in prims)], np.int8)
    key = np.take(groups, flat_ids)
    order = np.argsort(key, kind="stable")
    bounds = np.cumsum(np.bincount(key, minlength=_FIRST_GROUP + len(_SHAPES) * len(_TEXTURES)))
    ids_s, d_s = np.take(flat_ids, order), np.take(d.reshape(3, n_pix), order, axis=1)
    z_s = np.take(np.where(flat_ids == _SKY_ID, F32(0), z), order)
    p_s = cam + z_s * d_s
    label = np.empty(n_pix, np.uint8)
    normal = np.zeros((3, n_pix), F32)
    albedo = np.empty((3, n_pix), F32)
    table = np.array([q.row for q in prims], F32).reshape(-1, 24)
    labels = np.array([q.label for q in prims], np.uint8)
    n_sky = bounds[_SKY_ID]
    albedo[:, :n_sky] = _sky(scene, d_s[:, :n_sky])
    label[:n_sky] = SKY
    ground = slice(n_sky, bounds[_GROUND_ID])
    label[ground], albedo[:, ground] = _ground(scene, p_s[0, ground], p_s[2, ground])
    normal[1, ground] = 1.0
    for group in range(_FIRST_GROUP, len(bounds)):
        sl = slice(bounds[group - 1], bounds[group])
        if sl.start == sl.stop:
            continue
        shape, kind = divmod(group - _FIRST_GROUP, len(_TEXTURES))
        pid = ids_s[sl] - _FIRST_PRIM_ID
        rows = np.ascontiguousarray(np.take(table, pid, axis=0).T)
        normal[:, sl], loc, axis = _SHAPES[shape].surface(rows[:8], p_s[:, sl], o)
        albedo[:, sl] = _TEXTURES[kind](rows[8:], loc, axis)
        label[sl] = np.take(labels, pid)

    shade = scene.ambient + scene.sun_gain * np.maximum(scene.sun @ normal, 0)
    fog = np.exp(z_s * F32(-1.0 / scene.fog))
    rgb = albedo * (shade * fog) * scene.tint[:, None] + scene.sky[0][:, None] * (1 - fog)
    rgb[:, :n_sky] = albedo[:, :n_sky]
    # Sensor noise: uniform, std scene.noise (in 0..255 units), from its own stream.
    noise = np.frombuffer(np.random.default_rng([seed, index, 1]).bytes(3 * n_pix), np.uint8).reshape(3, n_pix)
    rgb = rgb * 255 + (noise - F32(127.5)) * F32(scene.noise * math.sqrt(12) / 256)
    rgb = np.clip(rgb, 0, 255, out=rgb).astype(np.uint8)
    unsort = np.empty_like(order)
    unsort[order] = np.arange(n_pix)
    image, normal = np.take(rgb, unsort, axis=1), np.take(rot.T @ normal, unsort, axis=1)  # world -> camera
    return {"image": np.ascontiguousarray(image.T).reshape(height, width, 3),
            "segmentation": np.take(label, unsort).reshape(height, width),
            "depth": np.where(ids == _SKY_ID, F32(0), zbuf),
            "normal": np.ascontiguousarray(normal.T).reshape(height, width, 3), "classification": cls}


def synth_info() -> DatasetInfo:
    """Description of the synthetic scenes for the engine (all four tasks, metric depth)."""
    return DatasetInfo(name="synth", tasks=TASKS, class_names=CATEGORY_NAMES, palette=CATEGORY_PALETTE,
                       depth_kind="metric", scene_classes=SCENE_CLASSES, crop_keeps_class=False,
                       mean=MEAN, std=STD)


def measure_stats(n: int = 200, seed: int = 0, height: int = 128, width: int = 256):
    """Per-channel mean and std of ``n`` rendered images in [0, 1]: how MEAN and STD were obtained."""
    images = np.stack([render_sample(seed, i, height, width)["image"] for i in range(n)]) / 255.0
    return tuple(images.mean((0, 1, 2)).round(4).tolist()), tuple(images.std((0, 1, 2)).round(4).tolist())


class SynthScenes(DenseDataset):
    """The synthetic scenes as a data set, rendered on demand (no cache).

    ``train``, ``val`` and ``test`` render from different seeds (:func:`~crossvit_mtl.data.cache.synth_split_seed`,
    the same streams ``crossvit-mtl data synth`` caches), so no split repeats another's scenes.
    """

    info = synth_info()

    def __init__(self, split: str = "train", length: int = 2000, seed: int = 0, height: int = 128,
                 width: int = 256, transform=None):
        super().__init__(transform)
        if length < 0 or seed < 0:
            raise ValueError("length and seed must be >= 0")
        self.split, self.length, self.height, self.width = split, length, height, width
        self.seed = synth_split_seed(seed, split)

    def __len__(self) -> int:
        return self.length

    def load(self, index: int) -> dict[str, Any]:
        return render_sample(self.seed, index, self.height, self.width)
