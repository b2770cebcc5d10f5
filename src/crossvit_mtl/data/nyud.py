"""NYUD-v2 with four tasks, read as ATRC, InvPT and TaskPrompter read it (or MTI-Net's variant).

ATRC's ``NYUDv2`` archive, under ``root``::

    images/{id}.png              RGB image (425x560)
    segmentation/{id}.png        the 40 NYU classes as 1..40, 0 = not annotated
    depth/{id}.npy               metres, float, 0 = invalid
    normals/{id}.png             RGB = (n + 1) * 255 / 2
    edge/{id}.png                0 or 255
    gt_sets/{train,val}.txt      ids, 795 / 654

MTI-Net's ``NYUD_MT`` is the same tree with ``images/{id}.jpg``, ``normals/{id}.npy`` (float
vectors) and ``edge/{id}.npy`` (0 or 1); it is recognised by the image of the first id.

Targets: segmentation shifted down by one (raw 0 -> IGNORE_INDEX, raw c -> c - 1, the 40-way
labelling of the references); depth as stored; normals decoded and scaled to unit length (zero
vectors stay zero: invalid); edges {0, 1}.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from crossvit_mtl.data.common import IGNORE_INDEX, DatasetInfo
from crossvit_mtl.data.errors import DataError, load_npy
from crossvit_mtl.data.listed import (
    ListedDataset,
    Readers,
    decode_normals,
    read_float_map,
    read_ids,
    read_png_map,
    read_png_rgb,
    read_rgb,
    unit_vectors,
)

#: The 40 classes of Gupta et al. (CVPR 2013), in the order of their ids 1..40.
NYU40_CLASS_NAMES = ("wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
                     "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
                     "floor mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
                     "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
                     "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop")
#: The NYU-40 colours ScanNet's tools draw these classes in (``create_color_palette``, ids 1..40).
NYU40_PALETTE = ((174, 199, 232), (152, 223, 138), (31, 119, 180), (255, 187, 120), (188, 189, 34), (140, 86, 75),
                 (255, 152, 150), (214, 39, 40), (197, 176, 213), (148, 103, 189), (196, 156, 148), (23, 190, 207),
                 (178, 76, 76), (247, 182, 210), (66, 188, 102), (219, 219, 141), (140, 57, 197), (202, 185, 52),
                 (51, 176, 203), (200, 54, 131), (92, 193, 61), (78, 71, 183), (172, 114, 82), (255, 127, 14),
                 (91, 163, 138), (153, 98, 156), (140, 153, 101), (158, 218, 229), (100, 125, 154), (178, 127, 135),
                 (120, 185, 128), (146, 111, 194), (44, 160, 44), (112, 128, 144), (96, 207, 209), (227, 119, 194),
                 (213, 92, 176), (94, 106, 211), (82, 84, 163), (100, 85, 144))

#: SEISM's maxDist for this benchmark's boundary F-measure (ATRC's README; InvPT's)
EDGE_MAX_DIST = 0.011
#: layout -> file extension of images, normals and edges
LAYOUTS = {"atrc": {"image": ".png", "normal": ".png", "edge": ".png"},
           "mti-net": {"image": ".jpg", "normal": ".npy", "edge": ".npy"}}
FOLDERS = {"image": "images", "segmentation": "segmentation", "depth": "depth", "normal": "normals", "edge": "edge"}


class NYUDv2(ListedDataset):
    """NYUD-v2 (795 train / 654 val) with 40-class segmentation, depth, normals and edges.

    Splits ``train`` and ``val``. The benchmark has no public test labels: the papers report every
    task on val (654 images, the standard NYU test split; the edges on SEISM's NYUD ``test_new``,
    which lists 654 ids as well).
    """

    TASKS = ("segmentation", "depth", "normal", "edge")
    INFO = DatasetInfo(name="nyud_v2", tasks=TASKS, class_names=NYU40_CLASS_NAMES, palette=NYU40_PALETTE,
                       depth_kind="metric", task_options={"edge": {"max_dist": EDGE_MAX_DIST}})
    layout = "atrc"

    def split_ids(self, split: str) -> list[str]:
        return read_ids(self.root / "gt_sets" / f"{split}.txt")

    def configure(self) -> list[DataError]:
        """ATRC's layout or MTI-Net's, from the image of the first id."""
        folder = self.root / FOLDERS["image"]
        for layout, extensions in LAYOUTS.items():
            if (folder / f"{self.ids[0]}{extensions['image']}").is_file():
                self.layout = layout
                self.info = dataclasses.replace(self.info, extra={**self.info.extra, "layout": layout})
                return []
        return [DataError(folder / f"{self.ids[0]}.png", f"file not found, nor {self.ids[0]}.jpg (the image of "
                                                         f"{self.ids[0]!r}, the first id of split {self.split!r})")]

    def paths(self, sample_id: str, tasks: Iterable[str]) -> dict[str, Path]:
        extensions = {"segmentation": ".png", "depth": ".npy", **LAYOUTS[self.layout]}
        return {key: self.root / FOLDERS[key] / f"{sample_id}{extensions[key]}" for key in ("image", *tasks)}

    def readers(self, sample_id: str, tasks: Iterable[str]) -> Readers:
        read = {"image": read_rgb, "segmentation": read_segmentation,
                "depth": lambda path: _checked_depth(path, read_float_map(path, "depth")),
                "normal": read_normals_png if self.layout == "atrc" else read_normals_npy,
                "edge": read_edge_png if self.layout == "atrc" else read_edge_npy}
        return {key: (path, _bind(read[key], path)) for key, path in self.paths(sample_id, tasks).items()}


def _bind(read, path: Path):
    return lambda: read(path)


def read_segmentation(path: Path) -> np.ndarray:
    """Raw 1..40 -> classes 0..39; raw 0 (not annotated) -> IGNORE_INDEX."""
    raw = read_png_map(path)
    bad = np.unique(raw[raw > len(NYU40_CLASS_NAMES)])
    if bad.size:
        raise DataError(path, f"label values {bad[:8].tolist()} are outside 0..{len(NYU40_CLASS_NAMES)} "
                              "(0 = not annotated, 1..40 the NYU-40 classes)")
    return np.where(raw == 0, IGNORE_INDEX, raw.astype(np.int64) - 1).astype(np.uint8)


def _checked_depth(path: Path, depth: np.ndarray) -> np.ndarray:
    if depth.min(initial=0) < 0:
        raise DataError(path, f"negative depth (min {depth.min():g}); 0 marks invalid")
    return depth


def read_normals_png(path: Path) -> np.ndarray:
    return decode_normals(read_png_rgb(path))


def read_normals_npy(path: Path) -> np.ndarray:
    """MTI-Net's float normals (H, W, 3), scaled to unit length; zero vectors stay invalid."""
    normals = load_npy(path)
    if normals.ndim != 3 or normals.shape[2] != 3 or not np.issubdtype(normals.dtype, np.floating):
        raise DataError(path, f"normals have shape {normals.shape} and dtype {normals.dtype}, expected HxWx3 floats")
    if not np.isfinite(normals).all():
        raise DataError(path, "normals contain NaN or Inf")
    return unit_vectors(normals)


def read_edge_png(path: Path) -> np.ndarray:
    """ATRC's edge PNG, 0 or 255, as the references' ``value / 255``: {0, 1}."""
    values = read_png_map(path)
    return _binary(path, values, 255)


def read_edge_npy(path: Path) -> np.ndarray:
    """MTI-Net's edge .npy, 0 or 1."""
    return _binary(path, read_float_map(path, "edge"), 1)


def _binary(path: Path, values: np.ndarray, one: int) -> np.ndarray:
    bad = np.unique(values[(values != 0) & (values != one)])
    if bad.size:
        raise DataError(path, f"edge values {bad[:8].tolist()} are neither 0 nor {one}")
    return (values == one).astype(np.uint8)
