"""Tiny data sets written in the real on-disk formats, for any test that needs one.

No data set can be downloaded here, so each writer reproduces its format file for file:
the Cityscapes download (PNGs with real label ids, uint16 disparity, camera JSON), the MTAN
.npy trees of Cityscapes and NYUv2, folder-per-class images and the project's cache.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from crossvit_mtl.data.cache import CacheWriter
from crossvit_mtl.data.common import CATEGORY_NAMES, CATEGORY_PALETTE, DatasetInfo

#: the camera of a real Cityscapes frame (aachen): baseline in metres, fx in pixels
CAMERA = {"extrinsic": {"baseline": 0.209313, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.1, "yaw": -0.0195,
                        "z": 1.22},
          "intrinsic": {"fx": 2262.52, "fy": 2265.3017905988554, "u0": 1096.98, "v0": 513.137}}


def cityscapes_stem(index: int, city: str = "aachen") -> str:
    return f"{city}_{index:06d}_000019"


def write_cityscapes(root: str | Path, counts: dict[str, int] | None = None, size: tuple[int, int] = (16, 32),
                     depth: bool = True, city: str = "aachen", seed: int = 0) -> Path:
    """The official layout. Label maps cycle through every label id 0..33, so each mode's
    table is exercised; disparity PNGs hold p = 0 (invalid), 1 (zero disparity) and real values."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    h, w = size
    for split, count in (counts or {"train": 2, "val": 1}).items():
        for i in range(count):
            stem = cityscapes_stem(i, city)
            paths = {kind: root / folder / split / city / f"{stem}_{suffix}" for kind, folder, suffix in (
                ("image", "leftImg8bit", "leftImg8bit.png"), ("label", "gtFine", "gtFine_labelIds.png"),
                ("disparity", "disparity", "disparity.png"), ("camera", "camera", "camera.json"))}
            for path in list(paths.values())[:4 if depth else 2]:
                path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths["image"])
            ids = ((np.arange(h * w) + i) % 34).reshape(h, w).astype(np.uint8)
            Image.fromarray(ids).save(paths["label"])
            if depth:
                disparity = rng.integers(2, 30000, (h, w)).astype(np.uint16)
                disparity[rng.random((h, w)) < 0.3] = 0
                disparity[0, 4] = 1
                Image.fromarray(disparity).save(paths["disparity"])
                paths["camera"].write_text(json.dumps(CAMERA))
    return root


def write_mtan_cityscapes(root: str | Path, counts: dict[str, int] | None = None, size: tuple[int, int] = (8, 16),
                          label_folder: str = "label_7", num_classes: int = 7, channels_first: bool = False,
                          depth_layout: str = "hw", seed: int = 0) -> Path:
    """MTAN Cityscapes: float images in [0, 1], float labels -1..C-1, disparity in [0, 0.5]."""
    rng = np.random.default_rng(seed)
    h, w = size
    for split, count in (counts or {"train": 3, "val": 2}).items():
        for i in range(count):
            image = rng.random((h, w, 3), dtype=np.float32)
            labels = rng.integers(-1, num_classes, (h, w)).astype(np.float32)
            labels[0, 0], labels[0, 1] = -1, num_classes - 1
            depth = (rng.random((h, w)) * 0.5).astype(np.float32)
            depth[rng.random((h, w)) < 0.5] = 0
            _save(root, split, {"image": image.transpose(2, 0, 1) if channels_first else image,
                                label_folder: labels, "depth": _layout(depth, depth_layout)}, i)
    return Path(root)


def write_mtan_nyuv2(root: str | Path, counts: dict[str, int] | None = None, size: tuple[int, int] = (12, 16),
                     seed: int = 0) -> Path:
    """MTAN NYUv2: float images, labels -1..12, depth in metres, unit normals (zero = invalid)."""
    rng = np.random.default_rng(seed)
    h, w = size
    for split, count in (counts or {"train": 2, "val": 2}).items():
        for i in range(count):
            normal = rng.normal(size=(h, w, 3)).astype(np.float32)
            normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
            normal[0] = 0
            depth = (rng.random((h, w, 1)) * 10).astype(np.float32)
            depth[0] = 0
            _save(root, split, {"image": rng.random((h, w, 3), dtype=np.float32),
                                "label": rng.integers(-1, 13, (h, w)).astype(np.float32),
                                "depth": depth, "normal": normal}, i)
    return Path(root)


def _layout(depth: np.ndarray, layout: str) -> np.ndarray:
    return {"hw": depth, "hw1": depth[..., None], "1hw": depth[None]}[layout]


def _save(root: str | Path, split: str, arrays: dict[str, np.ndarray], index: int) -> None:
    for folder, array in arrays.items():
        path = Path(root) / split / folder / f"{index}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, array)


def write_image_folder(root: str | Path, classes: dict[str, dict[str, int]] | None = None,
                       size: tuple[int, int] = (10, 14), seed: int = 0) -> Path:
    """``root/{split}/{class}/*.png|jpg``: alternates PNG and JPEG, with odd sizes to resize."""
    rng = np.random.default_rng(seed)
    classes = classes or {"train": {"cat": 2, "dog": 2}, "val": {"cat": 1, "dog": 1}}
    for split, per_class in classes.items():
        for name, count in per_class.items():
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
                image.save(folder / f"{i}.{'png' if i % 2 == 0 else 'jpg'}")
    return Path(root)


def random_sample(rng: np.random.Generator, size: tuple[int, int], num_classes: int = 8,
                  scene_classes: int = 3) -> dict:
    """A raw sample with every task, as ``DenseDataset.load`` returns it."""
    h, w = size
    normal = rng.normal(size=(h, w, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    labels = rng.integers(0, num_classes, (h, w)).astype(np.uint8)
    labels[0, 0] = 255
    parts = rng.integers(0, 7, (h, w)).astype(np.uint8)
    parts[-1] = 255
    saliency = (rng.random((h, w)) < 0.3).astype(np.uint8)
    return {"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "segmentation": labels,
            "human_parts": parts, "saliency": saliency,
            "depth": (rng.random((h, w)) * 50).astype(np.float32), "normal": normal,
            "edge": (rng.random((h, w)) < 0.1).astype(np.uint8),
            "classification": int(rng.integers(0, scene_classes))}


#: every task the project knows, as a cache stores them
CACHE_INFO = DatasetInfo(name="tiny", tasks=("segmentation", "human_parts", "saliency", "depth", "normal", "edge",
                                             "classification"),
                         class_names=CATEGORY_NAMES, palette=CATEGORY_PALETTE,
                         scene_classes=("a", "b", "c"))


def write_cache(root: str | Path, counts: dict[str, int] | None = None, size: tuple[int, int] = (8, 16),
                info: DatasetInfo = CACHE_INFO, seed: int = 0) -> dict[str, list[dict]]:
    """A cache with every task; returns the raw samples written, per split."""
    rng = np.random.default_rng(seed)
    written = {}
    with CacheWriter(root, info, size) as writer:
        for split, count in (counts or {"train": 3, "val": 2}).items():
            written[split] = [random_sample(rng, size) for _ in range(count)]
            writer.write_split(split, count, written[split])
    return written
