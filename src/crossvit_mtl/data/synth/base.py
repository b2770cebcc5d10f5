"""The classes, labels and camera of the scenes, and the images' statistics."""
from __future__ import annotations

import numpy as np

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


