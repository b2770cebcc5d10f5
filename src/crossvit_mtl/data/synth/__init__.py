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

Sections, one module each: base (classes, labels, camera, image statistics), draws
(randomness, colours, noise), materials (textures), primitives (shapes and their ray
intersections), roads, scene (building a scene from its random stream), raycast (rays
and the z-buffer pass), cues (what shows the road layout), render (one sample) and
dataset (the data set, and rendering into a cache).
"""
from crossvit_mtl.data.synth.base import FOCAL, MEAN, SCENE_CLASSES, STD, Z_FAR, intrinsics, scene_class
from crossvit_mtl.data.synth.cues import (
                                          CUE_SIZE,
                                          CUES,
                                          MIN_CUE_SHARE,
                                          ROAD_BEYOND,
                                          layout_cues,
                                          layout_from_cues,
                                          scene_for,
                                          shows_its_class,
)
from crossvit_mtl.data.synth.dataset import (
                                          SYNTH_SPLITS,
                                          SynthScenes,
                                          measure_stats,
                                          synth_info,
                                          synth_split_seed,
                                          write_synth,
)
from crossvit_mtl.data.synth.render import render_sample

__all__ = ["CUES", "CUE_SIZE", "FOCAL", "MEAN", "MIN_CUE_SHARE", "ROAD_BEYOND", "SCENE_CLASSES", "STD",
           "SYNTH_SPLITS", "SynthScenes", "Z_FAR", "intrinsics", "layout_cues", "layout_from_cues",
           "measure_stats", "render_sample", "scene_class", "scene_for", "shows_its_class", "synth_info",
           "synth_split_seed", "write_synth"]
