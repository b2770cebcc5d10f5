"""What shows a scene's road layout, and the first draw of a sample that shows its class."""
from __future__ import annotations

import numpy as np

from crossvit_mtl.data.synth.base import (
    CROSSROADS,
    CURVE,
    SCENE_CLASSES,
    STRAIGHT,
    T_JUNCTION,
    scene_class,
)
from crossvit_mtl.data.synth.draws import _Draws
from crossvit_mtl.data.synth.raycast import _z_pass
from crossvit_mtl.data.synth.scene import _build_scene, _Scene

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
    # only the ground and the buildings' facades count: their pixels, and where their rays hit
    what = np.take(np.array([0, 1, *(2 * (q.texture == "facade") for q in scene.prims)], np.int8), ids)
    ground, building = np.flatnonzero(what == 1), np.flatnonzero(what == 2)
    main = scene.roads[0]
    t = np.take(zbuf, ground)
    x, z = scene.cam[0] + t * np.take(d[0], ground), scene.cam[2] + t * np.take(d[2], ground)
    lat, along = main.coords(x, z)
    others = [r.project(x, z)[0] <= r.hw for r in scene.roads[1:]]
    side_roads = np.logical_or.reduce(others) & (np.abs(lat) > main.hw + 0.5) if others \
        else np.zeros(len(ground), bool)
    tb = np.take(zbuf, building)
    lat_b, _ = main.coords(scene.cam[0] + tb * np.take(d[0], building), scene.cam[2] + tb * np.take(d[2], building))
    counts = {"left": (side_roads & (lat < 0)).sum(), "right": (side_roads & (lat > 0)).sum(),
              "beyond": ((main.distance(lat, along) <= main.hw) & (t >= ROAD_BEYOND)).sum(),
              "closing": (np.abs(lat_b) <= main.hw + scene.sidewalk).sum()}
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


