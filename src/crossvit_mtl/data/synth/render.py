"""Rendering one sample: shading, fog, sensor noise, and every task's ground truth."""
from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from crossvit_mtl.data.synth.base import _FIRST_GROUP, _FIRST_PRIM_ID, _GROUND_ID, _SKY_ID, F32, SKY
from crossvit_mtl.data.synth.cues import scene_for
from crossvit_mtl.data.synth.materials import _TEXTURE_ROWS, _TEXTURES
from crossvit_mtl.data.synth.primitives import _SHAPES
from crossvit_mtl.data.synth.raycast import _ground, _sky, _z_pass
from crossvit_mtl.tasks.edge_eval import seg2bmap, thin_binary


def render_sample(seed: int, index: int, height: int = 128, width: int = 256) -> dict[str, Any]:
    """Render sample ``index`` of stream ``seed``: image, segmentation, depth, normal, edge, classification."""
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
    del d  # freed once used: the less a sample holds at once, the fewer fresh pages it faults in
    z_s = np.take(z, order)
    n_sky = bounds[_SKY_ID]
    z_s[:n_sky] = 0  # the sky sorts first
    p_s = z_s * d_s
    p_s += cam
    label = np.empty(n_pix, np.uint8)
    normal = np.zeros((3, n_pix), F32)
    albedo = np.empty((3, n_pix), F32)
    table = np.fromiter(itertools.chain.from_iterable(q.row for q in prims), F32, 24 * len(prims))
    table = np.ascontiguousarray(table.reshape(-1, 24).T)  # one column a primitive
    labels = np.array([q.label for q in prims], np.uint8)
    albedo[:, :n_sky] = _sky(scene, d_s[:, :n_sky])
    del d_s
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
        geometry = np.take(table[:_SHAPES[shape].geometry_rows], pid, axis=1)
        normal[:, sl], loc, axis = _SHAPES[shape].surface(geometry, p_s[:, sl], o)
        albedo[:, sl] = _TEXTURES[kind](np.take(table[8:8 + _TEXTURE_ROWS[kind]], pid, axis=1), loc, axis)
        label[sl] = np.take(labels, pid)

    del p_s, ids_s
    # albedo * (shade * fog) * tint + horizon * (1 - fog), the sky its albedo, then the sensor noise
    # (uniform, std scene.noise in 0..255 units, from its own stream): in place where numpy would
    # make a temporary (a * b is b * a and a + b is b + a, bit for bit).
    shade = np.maximum(scene.sun @ normal, 0)
    shade *= scene.sun_gain
    shade += scene.ambient
    fog = z_s * F32(-1.0 / scene.fog)
    np.exp(fog, out=fog)
    shade *= fog
    sky = albedo[:, :n_sky].copy()
    albedo *= shade
    albedo *= scene.tint[:, None]
    np.subtract(1, fog, out=fog)
    rgb = scene.sky[0][:, None] * fog
    rgb += albedo
    rgb[:, :n_sky] = sky
    rgb *= 255
    noise = sensor_bytes(seed, index, 3 * n_pix).reshape(3, n_pix)
    grain = np.subtract(noise, F32(127.5), out=albedo)
    grain *= F32(scene.noise * math.sqrt(12) / 256)
    rgb += grain
    rgb = np.clip(rgb, 0, 255, out=rgb).astype(np.uint8)
    unsort = np.empty_like(order)
    unsort[order] = np.arange(n_pix)
    segmentation = np.take(label, unsort).reshape(height, width)
    return {"image": _channels_last(np.take(rgb, unsort, axis=1), height, width), "segmentation": segmentation,
            "depth": np.where(ids == _SKY_ID, F32(0), zbuf),
            "normal": _channels_last(np.take(rot.T @ normal, unsort, axis=1), height, width),  # world -> camera
            "edge": semantic_boundaries(segmentation), "classification": cls}


def sensor_bytes(seed: int, index: int, n: int) -> np.ndarray:
    """The first ``n`` bytes of sample ``index``'s sensor-noise stream, ``default_rng([seed, index,
    1]).bytes(n)`` as uint8: the bit generator's raw 64-bit words, little-endian, are those bytes
    (``bytes`` draws 32-bit words, the low half of each 64-bit one first), without its three copies."""
    words = np.random.default_rng([seed, index, 1]).bit_generator.random_raw(-(-n // 8))
    return words.astype("<u8", copy=False).view(np.uint8)[:n]


def _channels_last(planes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(C, H * W) planes as an (H, W, C) array: a plane at a time, which numpy copies about 2.5 times
    faster than the transpose of the whole (its inner loop would run over C values)."""
    out = np.empty((planes.shape[1], len(planes)), planes.dtype)
    for k, plane in enumerate(planes):
        out[:, k] = plane
    return out.reshape(height, width, len(planes))


def semantic_boundaries(labels: np.ndarray) -> np.ndarray:
    """The label map's boundaries as SEISM draws a ground truth from a segmentation (``seg2bmap``, a
    pixel whose right, lower or lower-right neighbour differs, then thinned): uint8, 1 on a boundary."""
    return thin_binary(seg2bmap(labels)).astype(np.uint8)


