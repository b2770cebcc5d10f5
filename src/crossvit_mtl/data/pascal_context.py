"""PASCAL-Context with five tasks, read as ATRC, InvPT, TaskPrompter and MTI-Net read it.

The tree of ATRC's ``PASCALContext`` archive (MTI-Net's ``PASCAL_MT`` is the same tree), under
``root``::

    JPEGImages/{id}.jpg                    image
    ImageSets/Context/{train,val}.txt      ids, 4998 / 5105
    semseg/VOC12/{id}.png                  21 VOC classes (0 background), 255 not annotated;
    semseg/pascal-context/{id}.png           the fallback where VOC12 has no file
    human_parts/{id}.mat                   PASCAL-Part annotations (``anno``)
    normals_distill/{id}.png               distilled normals, RGB = (n + 1) * 255 / 2
    sal_distill/{id}.png                   distilled saliency, 0..255
    pascal-context/trainval/{id}.mat       ``LabelMap``: the 459 Context classes (edges, the
                                           normals' mask)
    ImageSets/Parts/{split}.txt            a JSON dict id -> class of each PASCAL-Part object:
                                           a cache of human_parts/*.mat, not read here

How each target is derived (the references' recipe; docs/benchmarks.md names their files):

* ``human_parts``: the part masks of every person object (VOC class 15) that has parts, in file
  order, mapped to 6 parts by ``PERSON_PARTS``; other pixels 0. An image with no part pixel is
  255 everywhere, as the references' ``AddIgnoreRegions`` makes it: never scored as background.
* ``normal``: decoded from the PNG, kept only where ``LabelMap`` holds a class of
  ``NORMALS_VALID_CLASSES``; zero (invalid) elsewhere.
* ``saliency``: ``value / 255 > 0.5``.
* ``edge``: the 4-neighbour Laplacian of ``LabelMap`` (borders mirrored, as OpenCV's default),
  every non-zero pixel, thinned (``edge_eval.thin_binary``: scikit-image's ``thin``, which the
  reference loaders call, the tests check the two agree).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path

import numpy as np

from crossvit_mtl.data.common import IGNORE_INDEX, DatasetInfo
from crossvit_mtl.data.errors import DataError
from crossvit_mtl.data.listed import ListedDataset, Readers, decode_normals, read_ids, read_mat, read_png_map, read_png_rgb, read_rgb
from crossvit_mtl.tasks.edge_eval import thin_binary

VOC_CLASS_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
                   "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
                   "train", "tvmonitor")
#: the PASCAL VOC colour map (class i: the bits of i spread over the high bits of R, G, B)
VOC_PALETTE = ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128),
               (128, 128, 128), (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0), (64, 0, 128), (192, 0, 128),
               (64, 128, 128), (192, 128, 128), (0, 64, 0), (128, 64, 0), (0, 192, 0), (128, 192, 0), (0, 64, 128))

#: PASCAL-Part's class index of a person (the VOC class order above)
PERSON_CLASS = 15
#: PASCAL-Part's 24 person part names -> the 6 parts above. The references' ``HUMAN_PART[6]``
#: (ATRC src/data/pascal_context.py; MTI-Net and InvPT data/pascal_context.py), which replaces
#: the person entry of db_info/pascal_part.json: hands count as lower arm, feet as lower leg,
#: the neck as torso.
PERSON_PARTS = {
    "head": 1, "hair": 1, "lear": 1, "rear": 1, "lebrow": 1, "rebrow": 1, "leye": 1, "reye": 1, "nose": 1, "mouth": 1,
    "neck": 2, "torso": 2,
    "luarm": 3, "ruarm": 3,
    "llarm": 4, "rlarm": 4, "lhand": 4, "rhand": 4,
    "luleg": 5, "ruleg": 5,
    "llleg": 6, "rlleg": 6, "lfoot": 6, "rfoot": 6,
}

#: The Context classes (name -> LabelMap value) the distilled normals are kept on: the names of
#: db_info/context_classes.json that are also names of db_info/nyu_classes.json (``unknown``
#: left out), plus ``tvmonitor`` (NYU says ``television``), as the references compute them
#: (MTI-Net data/db_info/*.json; the same files in ATRC and InvPT).
NORMALS_VALID_CLASSES = {
    "air conditioner": 3, "antenna": 4, "ashtray": 6, "bag": 9, "ball": 10, "balloon": 11, "barrel": 13,
    "basket": 15, "bathtub": 17, "bed": 18, "bench": 22, "bicycle": 23, "blackboard": 29, "board": 30, "book": 33,
    "bottle": 34, "bowl": 36, "box": 37, "bracelet": 38, "brick": 39, "broom": 41, "bucket": 43, "cabinet": 46,
    "cake": 49, "calculator": 50, "calendar": 51, "camera": 53, "can": 55, "candle": 56, "car": 59, "cart": 61,
    "case": 62, "cat": 65, "cd": 66, "ceiling": 68, "cell phone": 69, "chair": 72, "chessboard": 73, "clock": 78,
    "coffee machine": 83, "comb": 84, "computer": 85, "cone": 87, "container": 88, "corkscrew": 95, "counter": 96,
    "crate": 101, "cup": 104, "curtain": 105, "cutting board": 107, "dishwasher": 111, "dog": 113, "door": 115,
    "drum": 122, "duck": 124, "envelope": 135, "fan": 141, "faucet": 142, "fax machine": 143,
    "fire extinguisher": 146, "fish tank": 150, "flag": 154, "flashlight": 157, "floor": 158, "flower": 159,
    "fork": 165, "fruit": 172, "furnace": 174, "glass": 181, "globe": 183, "glove": 184, "guitar": 191,
    "hammer": 193, "handle": 195, "hanger": 197, "hat": 199, "heater": 202, "ipod": 213, "ironing board": 215,
    "jar": 216, "key": 219, "keyboard": 220, "knife": 223, "ladder": 225, "laptop": 228, "lid": 230, "light": 232,
    "light bulb": 233, "lock": 238, "machine": 239, "map": 242, "mask": 243, "mattress": 246, "microphone": 250,
    "microwave": 251, "mirror": 252, "money": 255, "mouse": 260, "mouse pad": 261, "napkin": 263, "oven": 269,
    "pan": 272, "paper": 273, "paper cutter": 275, "pen": 281, "pencil": 283, "person": 284, "photo": 285,
    "piano": 286, "picture": 287, "pig": 288, "pillow": 290, "pipe": 291, "pitcher": 292, "plant": 293,
    "plate": 295, "pool table": 304, "pot": 307, "printer": 309, "projector": 310, "radiator": 314, "radio": 315,
    "range hood": 319, "remote control": 323, "rope": 329, "rug": 330, "ruler": 331, "scale": 336,
    "sculpture": 342, "sewing machine": 345, "shelves": 349, "shoe": 350, "shopping cart": 351, "shovel": 352,
    "sign": 355, "sink": 357, "sofa": 368, "spatula": 370, "speaker": 371, "spoon": 374, "stapler": 379,
    "stick": 380, "stool": 383, "stove": 384, "table": 397, "tape": 401, "telephone": 403, "tent": 405,
    "toaster": 407, "toilet": 408, "toothbrush": 411, "towel": 412, "toy": 413, "toy car": 414, "trampoline": 417,
    "tray": 419, "tricycle": 421, "trophy": 423, "tvmonitor": 427, "typewriter": 429, "umbrella": 430,
    "vacuum cleaner": 432, "wall": 440, "wallet": 441, "wardrobe": 442, "washing machine": 443, "watch": 444,
    "water dispenser": 446, "window": 454, "wire": 457,
}

#: SEISM's maxDist for this benchmark's boundary F-measure (ATRC's README; InvPT's)
EDGE_MAX_DIST = 0.0075
#: val minus these ids is the 2498-image edge test set ("test_new"); see the file's header
EDGE_EXCLUDED_IDS = "pascal_context_voc_val.txt"


class PascalContext(ListedDataset):
    """PASCAL-Context (4998 train / 5105 val) with segmentation, human parts, saliency, normals
    and edges, each target as the multi-task references derive it (module docstring).

    Splits: ``train``, ``val``, and ``val_edge``, the 2498 val images the published boundary
    F-measure is computed on (SEISM's ``test_new``). The benchmark has no public test labels:
    the papers report every task on val, and so should results compare with them.
    """

    TASKS = ("segmentation", "human_parts", "saliency", "normal", "edge")
    SPLITS = ("train", "val", "val_edge")
    INFO = DatasetInfo(name="pascal_context", tasks=TASKS, class_names=VOC_CLASS_NAMES, palette=VOC_PALETTE,
                       task_options={"edge": {"max_dist": EDGE_MAX_DIST}})

    def split_ids(self, split: str) -> list[str]:
        folder = self.root / "ImageSets" / "Context"
        if split != "val_edge":
            return read_ids(folder / f"{split}.txt")
        excluded = set(read_ids(Path(str(resources.files("crossvit_mtl.data") / EDGE_EXCLUDED_IDS))))
        return [i for i in read_ids(folder / "val.txt") if i not in excluded]

    def _semseg_path(self, sample_id: str) -> Path:
        voc = self.root / "semseg" / "VOC12" / f"{sample_id}.png"
        context = self.root / "semseg" / "pascal-context" / f"{sample_id}.png"
        return context if not voc.is_file() and context.is_file() else voc

    def paths(self, sample_id: str, tasks: Iterable[str]) -> dict[str, Path]:
        tasks = tuple(tasks)
        paths = {"image": self.root / "JPEGImages" / f"{sample_id}.jpg"}
        for task, path in (("segmentation", self._semseg_path(sample_id)),
                           ("human_parts", self.root / "human_parts" / f"{sample_id}.mat"),
                           ("saliency", self.root / "sal_distill" / f"{sample_id}.png"),
                           ("normal", self.root / "normals_distill" / f"{sample_id}.png")):
            if task in tasks:
                paths[task] = path
        if "normal" in tasks or "edge" in tasks:
            paths["LabelMap"] = self._label_map_path(sample_id)
        return paths

    def _label_map_path(self, sample_id: str) -> Path:
        return self.root / "pascal-context" / "trainval" / f"{sample_id}.mat"

    def readers(self, sample_id: str, tasks: Iterable[str]) -> Readers:
        tasks = tuple(tasks)
        paths = self.paths(sample_id, tasks)
        labels_path = paths.pop("LabelMap", self._label_map_path(sample_id))
        # each file is read once however many targets need it: normals and edges share LabelMap
        image = functools.cache(lambda: read_rgb(paths["image"]))
        labels = functools.cache(lambda: read_label_map(labels_path))
        read: dict[str, Callable[[], np.ndarray]] = {
            "image": image,
            "segmentation": lambda: read_semseg(paths["segmentation"]),
            "human_parts": lambda: read_human_parts(paths["human_parts"], image().shape[:2]),
            "saliency": lambda: read_saliency(paths["saliency"]),
            "normal": lambda: read_normals(paths["normal"], labels_path, labels()),
            "edge": lambda: edges_from_labels(labels())}
        return {key: (paths.get(key, labels_path), read[key]) for key in ("image", *tasks)}


def read_semseg(path: Path) -> np.ndarray:
    """VOC12 class ids 0..20, IGNORE_INDEX where not annotated; anything else is a DataError."""
    labels = read_png_map(path)
    bad = np.unique(labels[(labels >= len(VOC_CLASS_NAMES)) & (labels != IGNORE_INDEX)])
    if bad.size:
        raise DataError(path, f"label values {bad[:8].tolist()} are outside 0..{len(VOC_CLASS_NAMES) - 1} "
                              f"and {IGNORE_INDEX}")
    return labels.astype(np.uint8)


def read_saliency(path: Path) -> np.ndarray:
    """The distilled saliency thresholded at half: ``value / 255 > 0.5`` -> {0, 1}."""
    values = read_png_map(path)
    if values.dtype != np.uint8:
        raise DataError(path, f"expected an 8-bit saliency PNG, got values of type {values.dtype}")
    return (values.astype(np.float32) / 255.0 > 0.5).astype(np.uint8)


def read_label_map(path: Path) -> np.ndarray:
    """The Context classes of every pixel: ``LabelMap`` of pascal-context/trainval/{id}.mat."""
    labels = np.asarray(read_mat(path, "LabelMap"))
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.number):
        raise DataError(path, f"LabelMap has shape {labels.shape} and dtype {labels.dtype}, expected HxW numbers")
    return labels


def read_normals(path: Path, labels_path: Path, labels: np.ndarray) -> np.ndarray:
    """Distilled normals as unit vectors where the Context class is one NYU has normals for."""
    normals = decode_normals(read_png_rgb(path))
    if labels.shape != normals.shape[:2]:
        raise DataError(path, f"size {normals.shape[0]}x{normals.shape[1]} differs from the LabelMap's "
                              f"{labels.shape[0]}x{labels.shape[1]} in {labels_path}")
    valid = np.isin(labels, np.fromiter(NORMALS_VALID_CLASSES.values(), dtype=np.int64))
    return np.where(valid[..., None], normals, np.float32(0.0))


def edges_from_labels(labels: np.ndarray) -> np.ndarray:
    """Boundaries of a LabelMap, as the references compute them with OpenCV and scikit-image.

    ``cv2.Laplacian`` (aperture 1: the 4-neighbour kernel, borders reflected without repeating
    the edge pixel) is scipy's ``laplace`` with ``mode='mirror'``; every pixel where it is not 0
    is a candidate (so a pixel whose neighbours differ but cancel out is not), then ``thin``.
    """
    from scipy.ndimage import laplace
    return thin_binary(laplace(labels.astype(np.float64), mode="mirror") != 0).astype(np.uint8)


def read_human_parts(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The 6-part map of every person with part annotations; all IGNORE_INDEX if there is none."""
    anno = read_mat(path, "anno")
    objects = _field(path, anno, "objects", "anno")
    target: np.ndarray | None = None
    for number, obj in enumerate(np.asarray(objects).ravel(), 1):
        parts = np.asarray(_field(path, obj, "parts", f"object {number}"))
        class_ind = np.asarray(_field(path, obj, "class_ind", f"object {number}")).ravel()
        if class_ind.size != 1:
            raise DataError(path, f"object {number}: class_ind holds {class_ind.size} values, expected 1")
        if int(class_ind[0]) != PERSON_CLASS or parts.size == 0:
            continue
        if target is None:
            target = np.zeros(size, dtype=np.uint8)
        for part in parts.ravel():
            name = str(np.asarray(_field(path, part, "part_name", f"a part of object {number}")).ravel()[0])
            if name not in PERSON_PARTS:
                raise DataError(path, f"object {number}: person part {name!r} is not a PASCAL-Part person part "
                                      f"({', '.join(sorted(PERSON_PARTS))})")
            mask = np.asarray(_field(path, part, "mask", f"part {name!r} of object {number}"))
            if mask.shape != size:
                raise DataError(path, f"object {number}: mask of part {name!r} has shape {mask.shape}, "
                                      f"its image is {size[0]}x{size[1]}")
            target[mask.astype(bool)] = PERSON_PARTS[name]
    if target is None or not target.any():
        return np.full(size, IGNORE_INDEX, dtype=np.uint8)
    return target


def _field(path: Path, record, name: str, what: str):
    """Field ``name`` of a MATLAB struct as scipy reads it, or a DataError naming what lacks it."""
    record = np.asarray(record)
    names = record.dtype.names or ()
    if name not in names:
        raise DataError(path, f"{what} has no field {name!r} (fields: {', '.join(names) or 'none'})")
    value = record[name]
    return value.ravel()[0] if value.shape else value[()]
