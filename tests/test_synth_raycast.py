"""Ray casting the scenes: the shortcuts of the z-pass give what casting each primitive alone over
the whole image gives, bit for bit."""
from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest

from crossvit_mtl.data.synth import scene_for
from crossvit_mtl.data.synth.base import F32, intrinsics
from crossvit_mtl.data.synth.materials import _Material
from crossvit_mtl.data.synth.primitives import _Box
from crossvit_mtl.data.synth.raycast import _camera_rays, _screen_boxes, _small_batches, _z_pass

SCENES = [(0, i) for i in range(12)] + [(1000003, i) for i in range(4)]


def whole_image_hits(prim, o, d) -> tuple[np.ndarray, np.ndarray]:
    """(t, hit) of one primitive over every pixel, on an empty z-buffer."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return prim.depth(o, tuple(d), np.full(d.shape[1:], np.inf, F32))


def straddles(prim, cam, rot) -> bool:
    """Whether the primitive's bounding box reaches from behind the camera plane to in front of it."""
    x, z, ex, ez, y0, y1 = prim.bounds
    corners = np.array([(x + i * ex, y, z + k * ez) for i in (-1, 1) for y in (y0, y1) for k in (-1, 1)])
    depth = ((corners - cam) @ rot)[:, 2]
    return depth.min() <= 0.05 < depth.max()


@pytest.mark.parametrize("size", [(64, 128), (96, 192)])
def test_screen_boxes_hold_every_pixel_a_primitive_is_hit_at(size):
    height, width = size
    straddling = narrowed = 0
    for seed, index in SCENES:
        scene, _ = scene_for(seed, index)
        d, rot = _camera_rays(scene, height, width)
        boxes = _screen_boxes(scene.prims, np.array(scene.cam, F32), rot, intrinsics(height, width), height, width)
        seen = {i for *_, i in boxes}
        for r0, r1, c0, c1, _, i in boxes:
            _, hit = whole_image_hits(scene.prims[i], scene.cam, d)
            inside = np.zeros_like(hit)
            inside[r0:r1, c0:c1] = True
            assert not (hit & ~inside).any(), (seed, index, i)
            if straddles(scene.prims[i], scene.cam, rot) and hit.any():
                straddling += 1
                narrowed += (r1 - r0) * (c1 - c0) < height * width
        for i, prim in enumerate(scene.prims):  # what is not seen is hit nowhere
            if i not in seen:
                assert not whole_image_hits(prim, scene.cam, d)[1].any(), (seed, index, i)
    assert straddling > 10 and narrowed > straddling / 2  # beside the camera: cast over part of the image


def test_small_boxes_cast_together_equal_each_cast_alone():
    height, width = 64, 128
    together = missed = 0
    for seed, index in SCENES:
        scene, _ = scene_for(seed, index)
        d, rot = _camera_rays(scene, height, width)
        boxes = _screen_boxes(scene.prims, np.array(scene.cam, F32), rot, intrinsics(height, width), height, width)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            batches, cast = _small_batches(scene.prims, boxes, scene.cam, d, width)
        for rank, (r0, r1, c0, c1, znear, i) in enumerate(boxes):
            if rank not in cast:
                continue
            b, start, end, drawn, safe = cast[rank]
            flat, t, hit, _, _ = batches[b]
            assert np.array_equal(flat[start:end], np.arange(height * width).reshape(height, width)[r0:r1, c0:c1].ravel())
            t, hit = t[start:end].reshape(r1 - r0, c1 - c0), hit[start:end].reshape(r1 - r0, c1 - c0)
            alone_t, alone_hit = (a[r0:r1, c0:c1] for a in whole_image_hits(scene.prims[i], scene.cam, d))
            assert np.array_equal(hit, alone_hit) and drawn == alone_hit.any()
            if not drawn:  # no ray of its box hits it
                missed += 1
                continue
            assert t.dtype == alone_t.dtype
            assert t[hit].tobytes() == alone_t[hit].tobytes()
            assert safe == (alone_t[alone_hit] >= znear).all()  # nowhere nearer than its box's nearest z
            together += 1
    assert together > 100 and missed > 0


def sequential_z_pass(scene, height: int, width: int):
    """The z-pass as one loop: each primitive near to far cast alone over its screen box."""
    d, rot = _camera_rays(scene, height, width)
    zbuf = np.full((height, width), np.inf, F32)
    ids = np.full((height, width), 0, np.int16)
    t_row = np.where(d[1][:, 0] < 0, -scene.cam[1] / np.minimum(d[1][:, 0], -1e-9), np.inf)
    rows = t_row < 150.0
    zbuf[rows], ids[rows] = t_row[rows, None], 1
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for r0, r1, c0, c1, znear, i in _screen_boxes(scene.prims, np.array(scene.cam, F32), rot,
                                                      intrinsics(height, width), height, width):
            zb = zbuf[r0:r1, c0:c1]
            if znear >= zb.max():
                continue
            t, closer = scene.prims[i].depth(scene.cam, tuple(d[:, r0:r1, c0:c1]), zb)
            np.copyto(zb, t, where=closer)
            np.copyto(ids[r0:r1, c0:c1], i + 2, where=closer)
    return zbuf, ids


def test_z_pass_equals_casting_one_primitive_at_a_time():
    """Including a primitive whose numbers are numpy float64 (numpy then computes in float64), which
    is cast alone, as it always was, and a copy of a primitive: at equal depths the first drawn stays."""
    scene, _ = scene_for(0, 6)
    counts = np.bincount(_z_pass(scene, 64, 128)[3].ravel(), minlength=len(scene.prims) + 2)[2:]  # pixels each
    box = max((i for i, p in enumerate(scene.prims) if isinstance(p, _Box)), key=lambda i: counts[i])
    old = scene.prims[box]
    x, z, _, _, y0, y1 = old.bounds
    wide = _Box(np.float64(x), z, math.atan2(old.frame.s, old.frame.c), np.float64(old.half[0]), old.half[2],
                y0, y1, old.label, _Material((0.5, 0.5, 0.5)))
    assert old.batched and not wide.batched
    twins = [i for i, p in enumerate(scene.prims) if counts[i] and p.batched and i != box]
    for prims in (scene.prims, [*scene.prims[:box], wide, *scene.prims[box + 1:]],
                  [*scene.prims, *(copy.copy(scene.prims[i]) for i in (box, *twins))]):
        trial = dataclasses.replace(scene, prims=prims)
        for height, width in ((64, 128), (48, 80)):
            _, _, zbuf, ids = _z_pass(trial, height, width)
            ref_zbuf, ref_ids = sequential_z_pass(trial, height, width)
            assert zbuf.tobytes() == ref_zbuf.tobytes() and np.array_equal(ids, ref_ids)
    assert (ids == box + 2).any() and len(twins) > 5  # the box (a copy behind it) and copies of small ones
    assert not (ids >= len(scene.prims) + 2).any()  # no copy shows


def test_what_a_pass_keeps_for_the_next_follows_the_scene():
    """A z-pass keeps the camera's rotation and the boxes' corners on the scene for the next pass (a
    scene is cast for its class check, then at the output size): a later pass at another size gives
    what casting each primitive alone gives, and so does one after the scene's primitives or camera
    changed in place (nothing kept is reused then)."""
    scene, _ = scene_for(0, 9)
    _z_pass(scene, 64, 128)
    kept = scene.memo["view"]
    moved = _Box(scene.cam[0], scene.cam[2] + 12.0, 0.3, 1.5, 1.0, 0.0, 3.0, 0, _Material((0.5, 0.5, 0.5)))
    changes = [lambda: None, lambda: scene.prims.append(moved), lambda: setattr(scene, "yaw", scene.yaw + 0.2)]
    for change, size in zip(changes, ((96, 192), (64, 128), (33, 70))):
        change()
        _, rot, zbuf, ids = _z_pass(scene, *size)
        ref_zbuf, ref_ids = sequential_z_pass(scene, *size)
        assert zbuf.tobytes() == ref_zbuf.tobytes() and np.array_equal(ids, ref_ids)
        assert np.array_equal(rot, _camera_rays(scene, 8, 16)[1])
    assert (ids == len(scene.prims) + 1).any()  # the added box is in the picture
    assert scene.memo["view"] is not kept
