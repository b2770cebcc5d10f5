"""Building a scene from its random stream: roads, sidewalks, buildings, roadside objects, traffic,
the ground's look and the lighting."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossvit_mtl.data.synth.base import (
    CONSTRUCTION,
    CURVE,
    F32,
    HUMAN,
    NATURE,
    OBJECT,
    STRAIGHT,
    T_JUNCTION,
    VEHICLE,
    VOID,
)
from crossvit_mtl.data.synth.draws import _Draws, _foliage, _grey, _hsv, _paint
from crossvit_mtl.data.synth.materials import _Material
from crossvit_mtl.data.synth.primitives import _bars, _Box, _Cylinder, _Ellipsoid, _plate, _Prim, _Quad, _YawFrame
from crossvit_mtl.data.synth.roads import FOOTPRINT, _Arc, _Straight


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
    #: indices in ``prims`` of the traffic lights' housings (what ``benchmarks/synth_lights.py`` counts)
    lights: tuple[int, ...] = ()
    #: what one ray-casting pass leaves for the next (``raycast._z_pass``), with what it was computed from
    memo: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)


#: Arc length of the camera along the main road, which starts behind it.
CAM_S = 40.0
#: Traffic lights are drawn the same way in every class, before any other roadside object claims
#: its ground: with this probability a pair of spots on the main road's kerbs, each taken with
#: probability 0.7, at an arc length drawn from this range (metres ahead of the camera), which ends
#: before the nearest layout change of any class (a bend starts 8 to 16 m ahead, a cross street's
#: near edge 10 to 18 m). Placed by class (at every junction, in 30 % of the other scenes) they were
#: a cue of the class outside the road geometry; ``benchmarks/synth_lights.py`` counts them.
LIGHT_P = 0.5
LIGHT_AHEAD = (5.0, 8.0)


class _Builder:
    """Places the scene's objects along the road network, keeping them off roads and each other."""

    def __init__(self, rng: _Draws, roads: list, sidewalk: float, cam):
        self.rng, self.roads, self.sw, self.cam = rng, roads, sidewalk, cam
        self.prims: list[_Prim] = []
        self.lights: list[int] = []
        self.taken = [(cam[0], cam[2], 3.0)]  # (x, z, radius) of placed objects; the ego vehicle first
        self.blocking = list(roads)  # the roads in the order footprints are tested against them

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
        for tx, tz, tr in self.taken:
            if (tx - x) ** 2 + (tz - z) ** 2 < (tr + radius) ** 2:
                return False
        self.taken.append((x, z, radius))
        return True

    def off_road(self, x, z, half_x, half_z, heading, margin) -> bool:
        """Whether a rectangular footprint (its :data:`FOOTPRINT` points) keeps ``margin`` from every
        road edge: settled by bounds where they can, else by the points' exact coordinates."""
        c, s = math.cos(heading), math.sin(heading)  # _YawFrame's
        unsettled = []
        for road in self.blocking:
            clear = road.footprint_clear(x, z, c, s, half_x, half_z, margin)
            if clear is False:
                if road is not self.blocking[0]:  # the road that blocked last is tried first next time
                    self.blocking.remove(road)
                    self.blocking.insert(0, road)
                return False
            if clear is None:
                unsettled.append(road)
        if not unsettled:
            return True
        wx, wz = _YawFrame(x, z, heading).to_world(FOOTPRINT[:, 0] * half_x, FOOTPRINT[:, 1] * half_z)
        return all((road.project(wx + x, wz + z)[0] - road.hw).min() > margin for road in unsettled)

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
        stretch = road.stretch(front)
        for lot in (width, 0.6 * width, 0.35 * width, 2.5):
            step = lot * stretch
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
            self.lights.append(len(self.prims))
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
        x, z, _ = road.frame(s + width / 2, side * (road.hw + sw + 8))
        if b.in_view(x, z, width / 2 + 10):
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


def _traffic(b: _Builder, rng: _Draws):
    """Cars in lanes and parked, people on sidewalks (some crossing), signs, lights, clutter."""
    roads, sw = b.roads, b.sw
    main = roads[0]

    def spot(lo, hi):
        """A road and an arc length on it: lo..hi metres ahead on the main road, near the camera elsewhere."""
        if rng.random() < 0.6:
            return main, CAM_S + rng.uniform(lo, hi)
        road = rng.pick(roads)
        return road, min(max(road.s_cam + rng.uniform(-0.5, 0.5) * hi, 0.0), road.length)

    if rng.random() < LIGHT_P:
        s_light = CAM_S + rng.uniform(*LIGHT_AHEAD)
        for kerb in (-1.0, 1.0):
            if rng.random() < 0.7:
                b.sign(main, s_light, kerb, traffic_light=True)
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
        on, at = spot(2, 45)
        b.sign(on, at, rng.sign())
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
    _traffic(b, rng)
    if rng.random() < 0.4:
        b.bonnet(cam, yaw)
    return _Scene(cam=cam, yaw=yaw, pitch=pitch, roads=roads, sidewalk=sw, ground=_ground_look(rng),
                  prims=b.prims, lights=tuple(b.lights), **_lighting(rng))


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


