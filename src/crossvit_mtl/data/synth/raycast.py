"""The camera's rays and the z-buffer pass that finds the surface each pixel sees."""
from __future__ import annotations

import itertools
import math
import sys

import numpy as np

from crossvit_mtl.data.synth.base import _FIRST_PRIM_ID, _GROUND_ID, _SKY_ID, F32, FLAT, NATURE, Z_FAR, intrinsics
from crossvit_mtl.data.synth.draws import _cell_noise, _frac
from crossvit_mtl.data.synth.primitives import _Prim
from crossvit_mtl.data.synth.scene import (
    _GROUND_TEXTURE,
    _KERB,
    _MARKING,
    _PAVEMENT,
    _ROAD,
    _SIDEWALK,
    _TERRAIN,
    _Scene,
)


def _rotation(yaw: float, pitch: float) -> np.ndarray:
    """Camera (OpenCV: x right, y down, z forward) to world (x right, y up, z forward)."""
    cp, sp, cy, sy = math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    flip = np.diag((1.0, -1.0, 1.0))
    rx = np.array(((1, 0, 0), (0, cp, sp), (0, -sp, cp)))
    ry = np.array(((cy, 0, sy), (0, 1, 0), (-sy, 0, cy)))
    return (ry @ rx @ flip).astype(F32)


_BOX_CORNERS = np.array([(i, j, k) for i in (-1, 1) for j in (0, 1) for k in (-1, 1)], F32)
#: The 12 edges of a box, as pairs of indices into _BOX_CORNERS (corners that differ in one coordinate).
_BOX_EDGES = np.array([(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]).T
#: A bounding box that straddles the camera plane is cut at this depth (m) to find the pixels it can
#: cover; farther than _NEAR_CLEAR from the camera, none of it nearer than that is in the picture.
_NEAR_CUT, _NEAR_CLEAR, _MARGIN_PX = 0.05, 0.1, 2


def _camera_corners(bounds: np.ndarray, cam, rot: np.ndarray) -> np.ndarray:
    """The 8 corners (n, 8, 3) of bounding boxes (rows x, z, ex, ez, y0, y1) in camera coordinates
    (rot is orthonormal), computed in the boxes' dtype."""
    x, z, ex, ez, y0, y1 = bounds.T
    cx, cy, cz = _BOX_CORNERS.T.astype(bounds.dtype)[:, None, :]
    corners = np.stack((x[:, None] + cx * ex[:, None], y0[:, None] + cy * (y1 - y0)[:, None],
                        z[:, None] + cz * ez[:, None]), -1)
    return (corners - cam) @ rot


def _near_parts(bounds: np.ndarray, cam, rot) -> tuple:
    """What of bounding boxes straddling the camera plane does not depend on the image size: their
    corners and the points where their edges cross the _NEAR_CUT plane, in camera coordinates,
    which of those are kept, and whether a box comes within _NEAR_CLEAR of the camera."""
    x, z, ex, ez, y0, y1 = bounds.T
    o = np.asarray(cam, np.float64)
    gap = np.stack((np.maximum(np.abs(o[0] - x) - ex, 0), np.maximum(np.maximum(y0 - o[1], o[1] - y1), 0),
                    np.maximum(np.abs(o[2] - z) - ez, 0)))
    pc = _camera_corners(bounds, o, rot.astype(np.float64))
    a, b = pc[:, _BOX_EDGES[0]], pc[:, _BOX_EDGES[1]]
    za, zb = a[..., 2], b[..., 2]
    crossing = (za - _NEAR_CUT) * (zb - _NEAR_CUT) < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        cut = a + ((_NEAR_CUT - za) / (zb - za))[..., None] * (b - a)
        points = np.concatenate((pc, cut), 1)
    keep = np.concatenate((pc[..., 2] >= _NEAR_CUT, crossing), 1)
    return points, keep, ~keep.any(1) | ((gap * gap).sum(0) <= _NEAR_CLEAR ** 2)


def _straddling_rects(near: tuple, k, height: int, width: int) -> np.ndarray:
    """Pixel rectangles (r0, r1, c0, c1) (n, 4) that hold every pixel a bounding box straddling the
    camera plane can cover (from its :func:`_near_parts`): the picture of its part at least
    _NEAR_CUT deep, widened by _MARGIN_PX, or the whole image when the box comes within
    _NEAR_CLEAR of the camera.

    Why: such a box (a building beside the camera, the bonnet) was cast over the whole image, most
    of the pixels cast in a pass; nearer than _NEAR_CUT no pixel can see it (a pixel's ray stays
    within 1.4 * _NEAR_CUT of the camera there), and its float32 hits lie on it to far less than a
    pixel, so the narrower rectangle holds every pixel it is drawn at.
    """
    points, keep, whole = near
    fx, fy, px, py = k
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = fx * points[..., 0] / points[..., 2] + px, fy * points[..., 1] / points[..., 2] + py
    rect = np.stack((np.floor(np.where(keep, v, np.inf).min(1)) - _MARGIN_PX,
                     np.floor(np.where(keep, v, -np.inf).max(1)) + 1 + _MARGIN_PX,
                     np.floor(np.where(keep, u, np.inf).min(1)) - _MARGIN_PX,
                     np.floor(np.where(keep, u, -np.inf).max(1)) + 1 + _MARGIN_PX), 1)
    rect = np.where(whole[:, None], (0, height, 0, width), rect)
    return np.clip(rect, 0, (height, height, width, width)).astype(int)


def _box_corners(prims: list[_Prim], cam, rot) -> tuple:
    """What :func:`_screen_boxes` needs that does not depend on the image size: the bounding boxes'
    corners in camera coordinates, their nearest z, which lie in front of the camera plane and
    which straddle it, with their :func:`_near_parts`. A scene's accepted draw is cast at two sizes.
    The corners come as (3, 8, n), a box a column: numpy reduces over 8 rows many times faster than
    along 8 numbers of each of n rows (a minimum or a maximum is the same value either way)."""
    bounds = np.fromiter(itertools.chain.from_iterable(p.bounds for p in prims), np.float64, 6 * len(prims))
    pc = np.ascontiguousarray(_camera_corners(bounds.astype(F32).reshape(-1, 6), cam, rot).transpose(2, 1, 0))
    nearest = pc[2].min(0)
    straddle = nearest <= 0.05
    znear = np.maximum(nearest, 0)
    front = pc[2].max(0) > 0.05
    cut = np.flatnonzero(straddle & front)
    near = _near_parts(bounds.reshape(-1, 6)[cut], cam, rot) if len(cut) else None
    return pc, straddle, znear, front, cut, near


def _screen_boxes(prims: list[_Prim], cam, rot, k, height, width, corners: tuple | None = None):
    """Pixel rectangles (r0, r1, c0, c1), nearest z and index of every primitive the camera sees.

    All bounding boxes are projected at once; the rectangles are conservative, and a box that
    straddles the camera plane gets the pixels its part in front of the camera can cover
    (:func:`_straddling_boxes`). Sorted near to far for occlusion culling. ``corners``: the
    primitives' :func:`_box_corners` seen from ``cam`` with ``rot``, when known.
    """
    if not prims:
        return []
    pc, straddle, znear, front, cut, near = _box_corners(prims, cam, rot) if corners is None else corners
    fx, fy, px, py = k
    with np.errstate(divide="ignore", invalid="ignore"):
        v, u = (fy * pc[1] / pc[2] + py, fx * pc[0] / pc[2] + px)
        # (r0, r1, c0, c1): the pixels whose centres the corners' picture spans, half a pixel wider
        rect = np.stack((v.min(0) + 0.5, v.max(0) + 1.5, u.min(0) + 0.5, u.max(0) + 1.5), 1)
        rect = np.clip(np.floor(rect), 0, (height, height, width, width))
    rect = np.where(straddle[:, None], (0, height, 0, width), rect).astype(int)
    if near is not None:
        rect[cut] = _straddling_rects(near, k, height, width)
    seen = np.flatnonzero(front & (rect[:, 1] > rect[:, 0]) & (rect[:, 3] > rect[:, 2]))
    seen = seen[np.argsort(znear[seen], kind="stable")]
    return [(*r, z, i) for r, z, i in zip(rect[seen].tolist(), znear[seen].tolist(), seen.tolist())]


#: Screen boxes of at most this many pixels are ray-cast together, one pass per shape: over so
#: few pixels numpy's cost per call, not the arithmetic, sets the pace.
_BATCH_PIXELS = 2048


def _small_batches(prims: list[_Prim], boxes: list, o, d: np.ndarray, width: int) -> tuple[list, dict]:
    """The primitives with a small screen box ray-cast together, one batch per shape: the batches,
    each (flat image index, t, hit) of every pixel of its boxes, a box after another in the order
    of ``boxes``, and for each of those boxes, by its position in ``boxes``, (batch, first and
    end entry, whether a ray hits it, whether no hit is nearer than the box's nearest z).

    Each shape's small boxes are ray-cast in one ``hits`` call over all their pixels, with every
    number of a primitive repeated per pixel as float32: the value numpy makes of a Python float
    that meets float32 rays, so t and hit are those of one primitive at a time, bit for bit. A
    primitive with a number that is not a Python float (``_Prim.batched``) is left to its own ``depth``.
    """
    groups: dict[type[_Prim], list] = {}
    if not all(type(v) is float for v in o):
        return [], {}
    for position, (r0, r1, c0, c1, znear, i) in enumerate(boxes):
        prim = prims[i]
        if prim.batched and (r1 - r0) * (c1 - c0) <= _BATCH_PIXELS:
            groups.setdefault(type(prim), []).append((position, r0, r1 - r0, c0, c1 - c0, znear, prim.ray_numbers(o)))
    if not groups:
        return [], {}
    rays = d.reshape(3, -1)
    # every box's pixels, the shapes' boxes one after another: their flat image indices, row after
    # row (each row of a box is a run of consecutive indices from its first pixel)
    items = [item for shape_items in groups.values() for item in shape_items]
    rank, r0, h, c0, w, znear = (np.array(v) for v in itertools.islice(zip(*items), 6))
    sizes = h * w
    ends = np.cumsum(sizes)
    row_first = np.repeat(r0 * width + c0 - (np.cumsum(h) - h) * width, h) + np.arange(h.sum()) * width
    row_len = np.repeat(w, h)
    flat = np.arange(ends[-1]) + np.repeat(row_first - (np.cumsum(row_len) - row_len), row_len)
    near = np.repeat(znear.astype(F32), sizes)
    batches: list[tuple] = []
    cast: dict[int, tuple] = {}
    first = 0
    for shape, shape_items in groups.items():
        last = first + len(shape_items)
        box_sizes, begin, end = sizes[first:last], ends[first] - sizes[first], ends[last - 1]
        numbers = np.repeat(np.array([item[6] for item in shape_items]).astype(F32).T, box_sizes, axis=1)
        t, hit = shape.hits(tuple(numbers), tuple(np.take(rays, flat[begin:end], axis=1)))
        starts = ends[first:last] - box_sizes - begin
        drawn = np.logical_or.reduceat(hit, starts)
        nearer = np.logical_or.reduceat(hit & (t < near[begin:end]), starts)
        cast.update(zip(rank[first:last].tolist(), zip(itertools.repeat(len(batches)), starts.tolist(),
                                                       (starts + box_sizes).tolist(), drawn.tolist(),
                                                       (~nearer).tolist())))
        batches.append((flat[begin:end], t, hit, rank[first:last], box_sizes))
        first = last
    return batches, cast


#: The z-buffer of a pass holds int64 words: the float32 bits of the depth in the high half, the
#: code of the surface in the low half (sky 0, ground 1, the k-th of the pass's screen boxes, near
#: to far, k + 2). For depths >= 0 they order as (depth, code) do, so "a surface nearer than what
#: is drawn replaces it", taken near to far, the first of equal depths staying, is their minimum,
#: in whatever order it is taken; a surface not hit, given an infinite depth, replaces nothing.
_HIGH, _LOW = (1, 0) if sys.byteorder == "little" else (0, 1)


def _keys(t: np.ndarray, codes) -> np.ndarray:
    """z-buffer words of float32 depths ``t`` (>= 0) and surface codes."""
    key = np.empty(t.shape, np.int64)
    halves = key.view(np.int32).reshape(*t.shape, 2)
    halves[..., _HIGH] = t.view(np.int32)
    halves[..., _LOW] = codes
    return key


def _halves(zbuf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The depths (float32) and the codes (int32) of z-buffer words, as views."""
    halves = zbuf.view(np.int32).reshape(*zbuf.shape, 2)
    return halves[..., _HIGH].view(F32), halves[..., _LOW]


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
    assert edge is not None and lat is not None and along is not None  # a scene has roads
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


def _camera_rays(scene: _Scene, height: int, width: int, rot: np.ndarray | None = None):
    """World ray directions (3, height, width), scaled so the ray parameter is z-depth, and the
    rotation (``rot``, the scene's :func:`_rotation`, when known)."""
    fx, fy, cx, cy = intrinsics(height, width)
    rot = _rotation(scene.yaw, scene.pitch) if rot is None else rot
    u = (np.arange(width, dtype=F32) - cx) / fx
    v = (np.arange(height, dtype=F32)[:, None] - cy) / fy
    d = np.empty((3, height, width), F32)
    for dk, r in zip(d, rot):
        np.add(r[0] * u, r[1] * v, out=dk)
        dk += r[2]
    return d, rot


def _z_pass(scene: _Scene, height: int, width: int):
    """Ray directions (3, H, W), the camera rotation, the z-buffer and the id of the surface each
    pixel sees (sky, ground, or a primitive)."""
    o = scene.cam
    cam = np.array(o, F32)
    # What does not depend on the size (the camera's rotation, the bounding boxes' corners) is kept
    # for the next pass while the scene's camera and primitives stay the same objects: a scene's
    # accepted draw is cast for its class check and at the output size.
    key = (o, scene.yaw, scene.pitch, tuple(scene.prims))
    view = scene.memo.get("view")
    if view is None or view[0] != key:
        rot = _rotation(scene.yaw, scene.pitch)
        rot.flags.writeable = False
        view = scene.memo["view"] = (key, rot, _box_corners(scene.prims, cam, rot) if scene.prims else None)
    _, rot, corners = view
    d, rot = _camera_rays(scene, height, width, rot)
    dx, dy, dz = d
    # Without roll each row has one ground depth, so the ground is a block of rows.
    t_row = np.where(dy[:, 0] < 0, -o[1] / np.minimum(dy[:, 0], -1e-9), np.inf).astype(F32)
    zbuf = np.empty((height, width), np.int64)  # depth and surface code (_keys)
    zbuf[:] = _keys(np.where(t_row < Z_FAR, t_row, F32(np.inf)), np.where(t_row < Z_FAR, 1, 0))[:, None]
    flat_zbuf = zbuf.reshape(-1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        boxes = _screen_boxes(scene.prims, cam, rot, intrinsics(height, width), height, width, corners)
        batches, cast = _small_batches(scene.prims, boxes, o, d, width)
        keys = [_keys(np.where(hit, t, F32(np.inf)), np.repeat(rank + 2, sizes)) for _, t, hit, rank, sizes in batches]
        # A small box with no hit nearer than its nearest z changes nothing where that is hidden, so
        # it needs no test for it: a run of them between others is composited at once (the
        # minimum), from ``done`` up to ``seen``, each batch's entries of the boxes passed.
        done, seen = [0] * len(batches), [0] * len(batches)
        for surface, (r0, r1, c0, c1, znear, i) in enumerate(boxes, 2):
            info = cast.get(surface - 2)
            if info is not None:
                b, start, end, drawn, safe = info
                seen[b] = end
                if safe or not drawn:
                    continue
                _composite(flat_zbuf, batches, keys, done, seen, b, start)
            else:
                _composite(flat_zbuf, batches, keys, done, seen)
            zb = zbuf[r0:r1, c0:c1]
            depth, code_of = _halves(zb)
            if znear >= depth.max():
                continue  # hidden behind what is already drawn
            if info is not None:
                np.minimum(zb, keys[info[0]][info[1]:info[2]].reshape(r1 - r0, c1 - c0), out=zb)
                continue
            # as cast alone: the depths and codes written where it is nearer
            t, closer = scene.prims[i].depth(o, (dx[r0:r1, c0:c1], dy[r0:r1, c0:c1], dz[r0:r1, c0:c1]), depth)
            np.copyto(depth, t, where=closer)
            np.copyto(code_of, surface, where=closer)
        _composite(flat_zbuf, batches, keys, done, seen)
    codes = np.array([_SKY_ID, _GROUND_ID, *(box[5] + _FIRST_PRIM_ID for box in boxes)], np.int16)
    depth, code = _halves(zbuf)
    return d, rot, depth.copy(), np.take(codes, code)


def _composite(flat_zbuf: np.ndarray, batches: list, keys: list, done: list, seen: list, batch: int = -1,
               start: int = 0) -> None:
    """Composite each batch's entries from ``done`` to ``seen`` (of ``batch``, to ``start``)."""
    for b, (flat, *_) in enumerate(batches):
        end = start if b == batch else seen[b]
        if end > done[b]:
            np.minimum.at(flat_zbuf, flat[done[b]:end], keys[b][done[b]:end])
        done[b] = seen[b]
