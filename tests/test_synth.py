"""The built-in synthetic scenes: layout, determinism, and agreement between the tasks' ground truths."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from crossvit_mtl.data.common import CATEGORY_NAMES, CATEGORY_PALETTE
from crossvit_mtl.data.synth import (
    CUES,
    MIN_CUE_SHARE,
    SCENE_CLASSES,
    SynthScenes,
    intrinsics,
    layout_cues,
    layout_from_cues,
    render_sample,
    scene_class,
    scene_for,
    shows_its_class,
    synth_info,
    synth_split_seed,
)
from crossvit_mtl.data.synth.dataset import SYNTH_TASKS
from crossvit_mtl.data.synth.render import sensor_bytes

SKY = CATEGORY_NAMES.index("sky")
FLAT = CATEGORY_NAMES.index("flat")


def back_project(depth: np.ndarray) -> np.ndarray:
    """Camera-frame 3-D points (H, W, 3) of a z-depth map, with the renderer's intrinsics."""
    h, w = depth.shape
    fx, fy, cx, cy = intrinsics(h, w)
    j, i = np.meshgrid(np.arange(w), np.arange(h))
    return np.stack(((j - cx) / fx * depth, (i - cy) / fy * depth, depth), -1).astype(np.float64)


def normals_from_depth(depth: np.ndarray) -> np.ndarray:
    """Unit normals of the interior pixels (H-2, W-2, 3) from central differences of the 3-D points."""
    p = back_project(depth)
    right = p[1:-1, 2:] - p[1:-1, :-2]
    down = p[2:, 1:-1] - p[:-2, 1:-1]
    n = np.cross(down, right)  # x right, y down: this order faces the camera
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


def neighbours(a: np.ndarray):
    """The 9 shifted views of a map that line up with its interior (H-2, W-2) grid."""
    h, w = a.shape[:2]
    return [a[di:h - 2 + di, dj:w - 2 + dj] for di in range(3) for dj in range(3)]


def interior(mask: np.ndarray) -> np.ndarray:
    """Interior pixels whose whole 3x3 neighbourhood is in ``mask``."""
    return np.logical_and.reduce(neighbours(mask))


def uniform(seg: np.ndarray) -> np.ndarray:
    """Interior pixels whose whole 3x3 neighbourhood has one label."""
    return np.logical_and.reduce([n == seg[1:-1, 1:-1] for n in neighbours(seg)])


@pytest.fixture(scope="module")
def samples():
    return [render_sample(0, i) for i in range(48)]


@pytest.mark.parametrize("size", [(128, 256), (48, 80)])
def test_shapes_and_dtypes(size):
    h, w = size
    s = render_sample(3, 5, h, w)
    assert set(s) == {"image", "segmentation", "depth", "normal", "edge", "classification"}
    assert s["image"].shape == (h, w, 3) and s["image"].dtype == np.uint8
    assert s["segmentation"].shape == (h, w) and s["segmentation"].dtype == np.uint8
    assert s["depth"].shape == (h, w) and s["depth"].dtype == np.float32
    assert s["normal"].shape == (h, w, 3) and s["normal"].dtype == np.float32
    assert isinstance(s["classification"], int) and 0 <= s["classification"] < len(SCENE_CLASSES)
    assert s["segmentation"].max() < len(CATEGORY_NAMES)
    assert s["edge"].shape == (h, w) and s["edge"].dtype == np.uint8 and set(np.unique(s["edge"])) == {0, 1}


def test_edges_are_the_label_maps_boundaries_one_pixel_wide():
    """SEISM's ground truth drawn from a segmentation: a pixel whose right, lower or lower-right
    neighbour has another category, thinned (scikit-image's thin: MATLAB's bwmorph 'thin')."""
    from skimage.morphology import thin

    s = render_sample(2, 4, 64, 128)
    seg = s["segmentation"].astype(int)
    differs = np.zeros(seg.shape, bool)
    differs[:-1, :-1] = (seg[:-1, :-1] != seg[:-1, 1:]) | (seg[:-1, :-1] != seg[1:, :-1]) | (seg[:-1, :-1] != seg[1:, 1:])
    differs[-1, :-1] = seg[-1, :-1] != seg[-1, 1:]
    differs[:-1, -1] = seg[:-1, -1] != seg[1:, -1]
    assert np.array_equal(s["edge"].astype(bool), thin(differs))
    assert s["edge"][~differs].sum() == 0 and 0.02 < s["edge"].mean() < 0.3


def test_resolution_samples_the_same_scene():
    # At 3x the resolution, pixel (3i+1, 3j+1) looks along exactly the ray of pixel (i, j).
    low, high = render_sample(1, 7, 32, 64), render_sample(1, 7, 96, 192)
    sub = (slice(1, None, 3), slice(1, None, 3))
    assert (high["segmentation"][sub] == low["segmentation"]).mean() > 0.99
    valid = low["depth"] > 0
    assert np.allclose(high["depth"][sub][valid], low["depth"][valid], rtol=1e-3)
    assert np.abs(high["image"][sub].astype(int) - low["image"]).mean() < 6  # only the sensor noise differs


def test_deterministic_in_seed_and_index():
    a, b = render_sample(0, 11), render_sample(0, 11)
    for key in ("image", "segmentation", "depth", "normal"):
        assert np.array_equal(a[key], b[key])
    for other in (render_sample(0, 12), render_sample(1, 11)):
        assert not np.array_equal(a["image"], other["image"])
        assert not np.array_equal(a["depth"], other["depth"])


def test_depth_and_normal_validity(samples):
    for s in samples:
        depth, normal, seg = s["depth"], s["normal"], s["segmentation"]
        valid = depth > 0
        assert np.array_equal(~valid, seg == SKY)  # only the sky (and fogged-out far ground) is invalid
        assert np.all(np.isfinite(depth)) and depth.max() < 1000
        assert np.allclose(np.linalg.norm(normal[valid], axis=-1), 1.0, atol=1e-4)
        assert not normal[~valid].any()
        rays = back_project(np.ones_like(depth))
        rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
        assert np.all((normal * rays).sum(-1)[valid] < 1e-3)  # normals face the camera


def test_normals_agree_with_depth_on_the_road(samples):
    checked = 0
    for s in samples[:16]:
        depth, seg = s["depth"], s["segmentation"]
        mask = interior((seg == FLAT) & (depth > 0) & (depth < 30))
        if mask.sum() < 100:
            continue
        rendered = s["normal"][1:-1, 1:-1][mask]
        estimated = normals_from_depth(depth)[mask]
        angle = np.degrees(np.arccos(np.clip((rendered * estimated).sum(-1), -1, 1)))
        assert np.percentile(angle, 99) < 3.0, np.percentile(angle, 99)
        checked += 1
    assert checked >= 10


def test_normals_agree_with_depth_on_every_surface(samples):
    """Away from edges every surface (boxes, cylinders, ellipsoids, quads, ground) is smooth in depth."""
    angles = []
    for s in samples[:16]:
        d = s["depth"].astype(np.float64)
        centre = d[1:-1, 1:-1]
        flat_x = np.abs(d[1:-1, 2:] + d[1:-1, :-2] - 2 * centre) < 0.01 * centre
        flat_y = np.abs(d[2:, 1:-1] + d[:-2, 1:-1] - 2 * centre) < 0.01 * centre
        mask = interior(d > 0) & uniform(s["segmentation"]) & flat_x & flat_y
        rendered = s["normal"][1:-1, 1:-1][mask]
        estimated = normals_from_depth(s["depth"])[mask]
        angles.append(np.degrees(np.arccos(np.clip((rendered * estimated).sum(-1), -1, 1))))
    angles = np.concatenate(angles)
    assert len(angles) > 10000
    assert np.median(angles) < 1.0 and np.percentile(angles, 90) < 5.0


def test_all_categories_occur(samples):
    seen = set()
    for s in samples:
        seen.update(np.unique(s["segmentation"]).tolist())
    assert seen == set(range(len(CATEGORY_NAMES)))


@pytest.mark.parametrize("seed,start", [(0, 0), (5, 13)])
def test_classification_exactly_balanced(seed, start):
    k = len(SCENE_CLASSES)
    classes = [scene_class(seed, i) for i in range(start, start + 6 * k)]
    assert np.bincount(classes, minlength=k).tolist() == [6] * k
    assert render_sample(seed, start, 16, 32)["classification"] == classes[0]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_every_scene_shows_the_cues_of_its_class(split):
    """From the renderer's own geometry: in every sample, each element its class needs covers a real
    share of the picture at the cache's resolution, what its layout lacks is absent, and so the
    visible cues alone spell the class."""
    seed = synth_split_seed(0, split)
    shares = {name: [] for name in CUES}
    for index in range(24):
        scene, cls = scene_for(seed, index)
        assert cls == scene_class(seed, index) == render_sample(seed, index, 8, 16)["classification"]
        cues = layout_cues(scene, 128, 256)
        assert layout_from_cues(cues) == cls, (index, SCENE_CLASSES[cls], cues)
        needed = {name: cues[name] / MIN_CUE_SHARE[name] for name in CUES if cues[name] > 0}
        assert shows_its_class({k: 1.25 * v for k, v in cues.items()}, cls), (index, needed)
        for name in CUES:
            shares[name].append(cues[name])
    # the side roads of junctions are not slivers: a median of about 1 % of the picture each
    assert np.median([v for v in shares["left"] if v > 0]) > 0.008


def test_a_mirrored_scene_spells_the_same_class():
    """Why a horizontal flip is label-preserving augmentation for the scene class: mirroring swaps
    the left and right cues, and the class the cues spell (and whether a scene shows its class)
    does not depend on which side a road opens to."""
    for index in range(8):
        scene, cls = scene_for(synth_split_seed(0, "train"), index)
        cues = layout_cues(scene, 96, 192)
        mirrored = {**cues, "left": cues["right"], "right": cues["left"]}
        assert layout_from_cues(mirrored) == layout_from_cues(cues) == cls
        assert shows_its_class(mirrored, cls) == shows_its_class(cues, cls)


def test_traffic_lights_are_placed_alike_in_every_class():
    """Traffic lights are no cue of the class: the same share of scenes of each class gets one,
    always on the stretch of the main street before any layout change (by class, as they were,
    every junction had lights and 30 % of the other scenes)."""
    from crossvit_mtl.data.synth.draws import _Draws
    from crossvit_mtl.data.synth.scene import LIGHT_AHEAD, _build_scene

    share = {}
    for cls in range(len(SCENE_CLASSES)):
        scenes = [_build_scene(_Draws(np.random.default_rng([77, index])), cls) for index in range(160)]
        share[SCENE_CLASSES[cls]] = np.mean([bool(scene.lights) for scene in scenes])
        ahead = [scene.prims[i].bounds[1] - scene.cam[2] for scene in scenes for i in scene.lights]
        assert ahead and LIGHT_AHEAD[0] <= min(ahead) and max(ahead) <= LIGHT_AHEAD[1]
    # each about 0.5 * (1 - 0.3 ** 2) = 0.455, binomial standard error 0.04 at 160 scenes
    assert all(0.33 < v < 0.58 for v in share.values()), share


def test_the_image_level_classes_are_four_road_layouts():
    assert SCENE_CLASSES == ("straight", "curve", "t_junction", "crossroads")
    assert set(MIN_CUE_SHARE) == set(CUES) and all(0 < v < 0.1 for v in MIN_CUE_SHARE.values())


def test_info():
    info = synth_info()
    assert info.name == "synth" and info.tasks == SYNTH_TASKS == ("segmentation", "depth", "normal", "edge", "classification")
    assert info.class_names == CATEGORY_NAMES and info.palette == CATEGORY_PALETTE
    assert info.depth_kind == "metric" and info.scene_classes == SCENE_CLASSES
    assert not info.crop_keeps_class  # a crop can cut a junction's arm away
    assert info.task_channels() == {"segmentation": 8, "depth": 1, "normal": 3, "edge": 1, "classification": 4}
    assert all(0.2 < m < 0.6 for m in info.mean) and all(0.1 < s < 0.35 for s in info.std)


def test_dataset_returns_tensors():
    train = SynthScenes("train", length=3, seed=2, height=32, width=64)
    val = SynthScenes("val", length=3, seed=2, height=32, width=64)
    assert len(train) == 3 and train.info == synth_info()
    x = train[1]
    assert x["image"].shape == (3, 32, 64) and x["image"].dtype == torch.float32
    assert x["image"].min() >= 0.0 and x["image"].max() <= 1.0
    assert x["segmentation"].shape == (32, 64) and x["segmentation"].dtype == torch.uint8
    assert x["depth"].shape == (1, 32, 64) and x["normal"].shape == (3, 32, 64)
    assert x["classification"].dtype == torch.int64 and x["classification"].ndim == 0
    raw = render_sample(2, 1, 32, 64)
    assert torch.equal(x["segmentation"], torch.from_numpy(raw["segmentation"]).long())  # train = the seed
    assert not torch.equal(val[1]["image"], x["image"])  # val renders a different stream
    with pytest.raises(IndexError):
        train[3]
    assert not torch.equal(SynthScenes("test", length=3, seed=2, height=32, width=64)[1]["image"], x["image"])
    with pytest.raises(ValueError, match="splits train, val, test, not 'extra'"):
        SynthScenes("extra")


def test_sensor_noise_bytes_are_the_streams_bytes():
    """The noise is read from the bit generator's raw words: the bytes ``Generator.bytes`` gives."""
    for n in (1, 3, 4, 7, 8, 9, 12, 3 * 33 * 70, 3 * 128 * 256):
        assert sensor_bytes(3, 5, n).tobytes() == np.random.default_rng([3, 5, 1]).bytes(n)
