"""The shapes a scene is made of, each intersected analytically with all the rays of its screen box."""
from __future__ import annotations

import math

import numpy as np

from crossvit_mtl.data.synth.base import _FIRST_GROUP
from crossvit_mtl.data.synth.draws import _frac, _to_local, _to_world
from crossvit_mtl.data.synth.materials import _TEXTURE_KINDS, _TEXTURES, _Material


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
    geometry_rows: int  # how many of the first 8 numbers of ``row`` its ``surface`` reads
    #: whether ``hits`` can take several primitives' numbers at once (not a cut-out quad's)
    batchable = True

    def depth(self, o, d, zb):
        t, valid = self.hits(self.ray_numbers(o), d)
        return t, valid & (t < zb)

    def ray_numbers(self, o) -> tuple:  # pragma: no cover - abstract
        """The numbers of this primitive that ``hits`` combines with the rays, seen from ``o``."""
        raise NotImplementedError

    @staticmethod
    def hits(q, d):  # pragma: no cover - abstract
        """(t, hit) of the rays ``d`` against the primitive(s) whose ``ray_numbers`` are ``q``:
        Python floats (one primitive), or float32 arrays with a value per ray (several at once,
        the same numbers as numpy casts a Python float to meet float32 rays)."""
        raise NotImplementedError

    def __init__(self, label: int, material: _Material, bounds: tuple, geometry: tuple):
        self.label, self.bounds, self.texture = label, bounds, material.kind
        #: Shading-pass group: pixels are sorted by it so every (shape, texture) pair is one slice.
        self.group = _FIRST_GROUP + self.shape_id * len(_TEXTURES) + _TEXTURE_KINDS.index(material.kind)
        #: Geometry padded to 8 numbers, then the material row: one table row per primitive.
        self.row = (*geometry, *(0.0,) * (8 - len(geometry)), *material.row())
        #: Whether it may be ray-cast with others (``hits``): its numbers are all Python floats,
        #: which numpy casts to float32 to meet float32 rays (a numpy float64 would compute in float64).
        self.batched = self.batchable and set(map(type, geometry)) == {float}


class _Box(_Prim):
    """Box standing on its footprint, rotated by ``heading`` about the vertical axis (slab test)."""

    shape_id = 0
    geometry_rows = 8  # of ``row`` that ``surface`` reads

    def __init__(self, x, z, heading, half_x, half_z, y0, y1, label, material):
        fr = _YawFrame(x, z, heading)
        ex, ez = abs(fr.c) * half_x + abs(fr.s) * half_z, abs(fr.s) * half_x + abs(fr.c) * half_z
        self.frame = fr
        self.half = (half_x, (y1 - y0) / 2, half_z)
        self.yc = (y0 + y1) / 2
        super().__init__(label, material, (x, z, ex, ez, y0, y1), (x, z, fr.c, fr.s, self.yc, *self.half))

    def ray_numbers(self, o):
        # _YawFrame.to_local and the slabs written out: a pass asks every small box for these
        fr = self.frame
        c, s, vx, vz = fr.c, fr.s, o[0] - fr.x, o[2] - fr.z
        olx, oly, olz = vx * c - vz * s, o[1] - self.yc, vx * s + vz * c
        hx, hy, hz = self.half
        return c, s, -hx - olx, hx - olx, -hy - oly, hy - oly, -hz - olz, hz - olz

    @staticmethod
    def hits(q, d):
        c, s, *slabs = q
        dlx, dlz = _to_local(d[0], d[2], c, s)
        near = far = None
        for k, dl in enumerate((dlx, d[1], dlz)):
            a, b = slabs[2 * k] / dl, slabs[2 * k + 1] / dl
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            near = lo if near is None else np.maximum(near, lo)
            far = hi if far is None else np.minimum(far, hi)
        return near, (near <= far) & (near > 0)

    @staticmethod
    def surface(g, p, o):
        x, z, c, s, yc, _, hy, _ = g
        lx, lz = _to_local(p[0] - x, p[2] - z, c, s)
        loc = np.stack((lx, p[1] - yc, lz))
        cam_x, cam_z = _to_local(o[0] - x, o[2] - z, c, s)
        cam = np.stack((cam_x, o[1] - yc, cam_z))
        # The face the point lies on, among those facing the camera (rounding must not pick a back face).
        side = np.sign(loc)
        facing = (np.abs(cam) > g[5:8]) & (np.sign(cam) == side)
        v0, v1, v2 = np.where(facing, np.abs(loc) / g[5:8], -1.0)
        axis = np.where((v0 >= v1) & (v0 >= v2), 0, np.where(v1 >= v2, 1, 2))  # argmax, first of equals
        nl = np.where(np.arange(3)[:, None] == axis, side, 0)
        nx, nz = _to_world(nl[0], nl[2], c, s)
        loc[1] += hy  # textures measure height from the bottom
        return np.stack((nx, nl[1], nz)), loc, axis


class _Cylinder(_Prim):
    """Vertical cylinder with flat caps: poles, trunks, sign posts."""

    shape_id = 1
    geometry_rows = 5  # of ``row`` that ``surface`` reads

    def __init__(self, x, z, radius, y0, y1, label, material):
        super().__init__(label, material, (x, z, radius, radius, y0, y1), (x, y0, z, radius, y1))
        self.x, self.z, self.r, self.y0, self.y1 = x, z, radius, y0, y1

    def ray_numbers(self, o):
        ox, oy, oz = o[0] - self.x, o[1], o[2] - self.z
        r2 = self.r ** 2
        capped = not self.y0 <= oy <= self.y1  # the camera sees one cap
        cap = ((self.y1 if oy > self.y1 else self.y0) - oy) if capped else 0.0
        return ox, oy, oz, ox * ox + oz * oz - r2, r2, self.y0, self.y1, float(capped), cap

    @staticmethod
    def hits(q, d):
        ox, oy, oz, c, r2, y0, y1, capped, cap = q
        dx, dy, dz = d
        a = dx * dx + dz * dz
        b = ox * dx + oz * dz
        disc = b * b - a * c
        t = (-b - np.sqrt(np.maximum(disc, 0))) / a
        y = oy + t * dy
        hit = (disc > 0) & (y >= y0) & (y <= y1)
        if isinstance(capped, np.ndarray):  # several cylinders: the caps of those the camera sees one of
            if capped.any():
                capped = capped > 0
                tc = cap / dy
                cx, cz = ox + tc * dx, oz + tc * dz
                t = np.where(hit | ~capped, t, tc)
                hit |= capped & (cx * cx + cz * cz <= r2)
        elif capped:
            tc = cap / dy
            cx, cz = ox + tc * dx, oz + tc * dz
            t = np.where(hit, t, tc)
            hit |= cx * cx + cz * cz <= r2
        return t, hit & (t > 0)

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
    geometry_rows = 6  # of ``row`` that ``surface`` reads

    def __init__(self, x, y, z, radius, radius_y, label, material):
        self.c = (x, y, z)
        self.inv_r = (1 / radius, 1 / radius_y, 1 / radius)
        super().__init__(label, material, (x, z, radius, radius, y - radius_y, y + radius_y), (*self.c, *self.inv_r))

    def ray_numbers(self, o):
        (cx, cy, cz), (irx, iry, irz) = self.c, self.inv_r
        ox, oy, oz = (o[0] - cx) * irx, (o[1] - cy) * iry, (o[2] - cz) * irz
        return irx, iry, irz, ox, oy, oz, ox * ox + oy * oy + oz * oz - 1.0

    @staticmethod
    def hits(q, d):
        irx, iry, irz, ox, oy, oz, c = q
        dx, dy, dz = d[0] * irx, d[1] * iry, d[2] * irz
        a = dx * dx + dy * dy + dz * dz
        b = ox * dx + oy * dy + oz * dz
        disc = b * b - a * c
        t = (-b - np.sqrt(np.maximum(disc, 0))) / a
        return t, (disc > 0) & (t > 0)

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
    geometry_rows = 5  # of ``row`` that ``surface`` reads
    batchable = False

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


