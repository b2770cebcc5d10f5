"""Cityscapes as the official download lays it out, converted once into the project's cache.

Source layout (``{split}`` is train / val / test, ``{city}`` e.g. aachen)::

    leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png     RGB image
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png      label ids 0..33
    disparity/{split}/{city}/{city}_{seq}_{frame}_disparity.png         optional, uint16
    camera/{split}/{city}/{city}_{seq}_{frame}_camera.json              optional

Disparity: ``d = (p - 1) / 256`` for ``p > 0``; ``p = 0`` is invalid (and so is ``p = 1``, a
zero disparity, i.e. infinitely far). Metric depth is ``baseline * fx / d`` with ``baseline``
(metres) and ``fx`` (pixels) from the camera file.

Resizing: images with area averaging when shrinking (bilinear when enlarging), labels with
nearest neighbour, depth by converting disparity to metres at full resolution and *then*
resizing with nearest neighbour, so that invalid pixels stay exactly 0 and no depth is invented
by averaging a near and a far surface, or a valid pixel with an invalid one.

Label modes, all built from the official table in ``cityscapesscripts.helpers.labels``:

* ``category8``: the 8 categories, categoryId 0..7, void counted as class 0 (the thesis).
* ``mtan7``: the 7 non-void categories as 0..6, void -> IGNORE_INDEX (the MTAN benchmark).
* ``train19``: the 19 evaluated classes (trainId 0..18), everything else IGNORE_INDEX.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from crossvit_mtl.data.common import IGNORE_INDEX, DatasetInfo
from crossvit_mtl.data.errors import DataError, raise_first

LABEL_MODES = ("category8", "mtan7", "train19")

SUFFIXES = {"image": "_leftImg8bit.png", "label": "_gtFine_labelIds.png",
            "disparity": "_disparity.png", "camera": "_camera.json"}
FOLDERS = {"image": "leftImg8bit", "label": "gtFine", "disparity": "disparity", "camera": "camera"}

#: marks label ids the official table does not have (a colour PNG or a corrupt file)
UNKNOWN_ID = -1


@dataclass(frozen=True)
class LabelMode:
    """How a labelIds PNG becomes class indices: ``lut[id]`` is the class (or IGNORE_INDEX)."""

    lut: np.ndarray  # int16 (256,), UNKNOWN_ID for ids outside the official table
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]


def label_mode(mode: str) -> LabelMode:
    """Build the id -> class table, class names and colours of ``mode`` from cityscapesscripts."""
    from cityscapesscripts.helpers.labels import labels

    if mode not in LABEL_MODES:
        raise ValueError(f"unknown Cityscapes label mode {mode!r} (choose from {', '.join(LABEL_MODES)})")
    table = [label for label in labels if label.id >= 0]  # id -1 (licence plate) is never in a PNG
    lut = np.full(256, UNKNOWN_ID, dtype=np.int16)
    if mode == "train19":
        for label in table:
            lut[label.id] = label.trainId if 0 <= label.trainId < IGNORE_INDEX else IGNORE_INDEX
        named = sorted((l.trainId, l.name, l.color) for l in table if 0 <= l.trainId < IGNORE_INDEX)
        return LabelMode(lut, tuple(n for _, n, _ in named), tuple(c for _, _, c in named))
    # A category's colour is that of its first evaluated class (road for flat, car for vehicle...).
    categories: dict[int, tuple[str, tuple[int, int, int]]] = {}
    for label in sorted(table, key=lambda l: (l.categoryId, l.ignoreInEval, l.trainId)):
        categories.setdefault(label.categoryId, (label.category, (0, 0, 0) if label.categoryId == 0 else label.color))
    shift = 1 if mode == "mtan7" else 0
    for label in table:
        lut[label.id] = IGNORE_INDEX if label.categoryId < shift else label.categoryId - shift
    kept = [categories[c] for c in sorted(categories) if c >= shift]
    return LabelMode(lut, tuple(n for n, _ in kept), tuple(c for _, c in kept))


@dataclass(frozen=True)
class Frame:
    """The files of one ``{city}_{seq}_{frame}``; disparity and camera are None without depth."""

    stem: str
    image: Path
    label: Path
    disparity: Path | None = None
    camera: Path | None = None


def find_frames(root: str | os.PathLike, split: str) -> tuple[list[Frame], list[DataError]]:
    """Pair the files of ``split`` by their stem; returns the frames and every problem found.

    Depth is used when ``disparity/{split}`` exists; then every frame needs both partners.
    """
    root = Path(root)
    problems: list[DataError] = []
    kinds = ["image", "label"]
    if (root / FOLDERS["disparity"] / split).is_dir():
        kinds += ["disparity", "camera"]
    files: dict[str, dict[str, Path]] = {}
    for kind in kinds:
        folder = root / FOLDERS[kind] / split
        if not folder.is_dir():
            problems.append(DataError(folder, f"folder missing (expected the Cityscapes layout "
                                              f"{FOLDERS[kind]}/{split}/CITY/*{SUFFIXES[kind]})"))
            continue
        found = {p.name[: -len(SUFFIXES[kind])]: p for p in folder.glob(f"*/*{SUFFIXES[kind]}")}
        files[kind] = found
    if problems:
        return [], problems
    if not files["image"]:
        return [], [DataError(root / FOLDERS["image"] / split, f"no *{SUFFIXES['image']} files")]
    stems = sorted(set().union(*(f.keys() for f in files.values())))
    frames = []
    for stem in stems:
        have = {kind: files[kind].get(stem) for kind in kinds}
        present = next(p for p in have.values() if p is not None)
        missing = [kind for kind in kinds if have[kind] is None]
        for kind in missing:
            expected = root / FOLDERS[kind] / split / present.parent.name / (stem + SUFFIXES[kind])
            problems.append(DataError(present, f"no matching {kind} file {expected}"))
        if not missing:
            frames.append(Frame(stem, **{kind: p for kind, p in have.items() if p is not None}))
    return frames, problems


def read_png(path: Path) -> np.ndarray:
    """Decode a PNG fully (so truncated files fail here, naming the file)."""
    try:
        with Image.open(path) as img:
            img.load()
            return np.array(img.convert("RGB") if img.mode in ("P", "RGBA", "CMYK") else img)
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(path, f"cannot read image ({err})") from None


def read_labels(path: Path, lut: np.ndarray) -> np.ndarray:
    """labelIds PNG -> class indices; ids outside the official table are a DataError."""
    ids = read_png(path)
    if ids.ndim != 2 or ids.dtype != np.uint8:
        raise DataError(path, f"expected a single-channel 8-bit labelIds PNG, got shape "
                              f"{ids.shape} dtype {ids.dtype} (a _color.png instead of _labelIds.png?)")
    mapped = lut[ids]
    if (mapped == UNKNOWN_ID).any():
        bad = np.unique(ids[mapped == UNKNOWN_ID])
        raise DataError(path, f"label ids {bad[:8].tolist()} are not Cityscapes label ids (0..33)")
    return mapped.astype(np.uint8)


def read_camera(path: Path) -> tuple[float, float]:
    """(baseline in metres, fx in pixels) from a Cityscapes camera file."""
    try:
        camera = json.loads(Path(path).read_text())
        baseline, fx = float(camera["extrinsic"]["baseline"]), float(camera["intrinsic"]["fx"])
    except (OSError, ValueError) as err:
        raise DataError(path, f"not a readable camera JSON file ({err})") from None
    except (KeyError, TypeError) as err:
        raise DataError(path, f"camera file lacks extrinsic.baseline / intrinsic.fx ({err})") from None
    if not (np.isfinite(baseline) and np.isfinite(fx) and baseline > 0 and fx > 0):
        raise DataError(path, f"baseline {baseline} and fx {fx} must be positive")
    return baseline, fx


def read_depth(disparity_path: Path, camera_path: Path) -> np.ndarray:
    """Metric depth (float32, 0 = invalid) at full resolution from a disparity PNG and its camera."""
    raw = read_png(disparity_path)
    if raw.ndim != 2 or raw.dtype not in (np.uint16, np.int32):
        raise DataError(disparity_path, f"expected a single-channel 16-bit disparity PNG, got "
                                        f"shape {raw.shape} dtype {raw.dtype}")
    baseline, fx = read_camera(camera_path)
    disparity = (raw.astype(np.float32) - 1.0) / 256.0
    valid = disparity > 0
    depth = np.zeros(raw.shape, dtype=np.float32)
    depth[valid] = baseline * fx / disparity[valid]
    return depth


def _resize(array: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """Resize an HxW(x3) array to ``size`` (H, W) with Pillow."""
    if array.shape[:2] == tuple(size):
        return array
    mode = "F" if array.dtype == np.float32 else None
    image = Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)
    return np.asarray(image.resize((size[1], size[0]), resample=resample))


def read_image(path: Path) -> np.ndarray:
    image = read_png(path)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(path, f"expected an 8-bit RGB image, got shape {image.shape} dtype {image.dtype}")
    return image


def _frame_readers(frame: Frame, lut: np.ndarray) -> dict[str, tuple[Path, Callable[[], np.ndarray]]]:
    """The full-resolution arrays of a frame, each with the file it comes from and its reader."""
    readers = {"image": (frame.image, lambda: read_image(frame.image)),
               "segmentation": (frame.label, lambda: read_labels(frame.label, lut))}
    if frame.disparity is not None:
        readers["depth"] = (frame.disparity, lambda: read_depth(frame.disparity, frame.camera))  # type: ignore[arg-type]
    return readers


def frame_problems(frame: Frame, lut: np.ndarray) -> list[DataError]:
    """Every problem of one frame (for ``data check``): each file read, sizes compared."""
    problems, sizes = [], {}
    readers = _frame_readers(frame, lut)
    for key, (_path, reader) in readers.items():
        try:
            sizes[key] = reader().shape[:2]
        except DataError as err:
            problems.append(err)
    image_size = sizes.get("image")
    return problems + [DataError(readers[key][0], f"size {size} differs from its image {image_size}")
                       for key, size in sizes.items() if image_size is not None and size != image_size]


def load_frame(frame: Frame, size: tuple[int, int], lut: np.ndarray) -> dict[str, Any]:
    """Read, map and resize one frame into a raw sample of the cache."""
    full = {}
    for key, (path, reader) in _frame_readers(frame, lut).items():
        full[key] = reader()
        if full[key].shape[:2] != full["image"].shape[:2]:
            raise DataError(path, f"size {full[key].shape[:2]} differs from its image {full['image'].shape[:2]}")
    shrink = size[0] < full["image"].shape[0]
    resample = {"image": Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR,
                "segmentation": Image.Resampling.NEAREST, "depth": Image.Resampling.NEAREST}
    return {key: _resize(value, size, resample[key]) for key, value in full.items()}


class _FrameLoader:
    """Picklable ``load_frame`` with fixed size and table, for worker processes."""

    def __init__(self, size: tuple[int, int], lut: np.ndarray):
        self.size, self.lut = size, lut

    def __call__(self, frame: Frame) -> dict[str, Any]:
        return load_frame(frame, self.size, self.lut)


def cityscapes_frames(root: str | os.PathLike, splits: Iterable[str]) -> dict[str, list[Frame]]:
    """The frames of every split, or a DataError for the first problem found (all are listed by
    ``crossvit-mtl data check``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "Cityscapes root folder not found")
    result = {}
    for split in splits:
        frames, problems = find_frames(root, split)
        raise_first(problems, root)
        result[split] = frames
    return result


def convert_cityscapes(root: str | os.PathLike, out: str | os.PathLike, size: tuple[int, int] = (128, 256),
                       labels: str = "category8", splits: Iterable[str] = ("train", "val"),
                       overwrite: bool = False, workers: int = 1, progress: bool = False) -> Path:
    """Convert an official Cityscapes tree into a cache at ``out``; returns ``out``.

    Tasks are segmentation, plus depth (metres) when every split has disparity and camera files.
    All files are paired and checked for presence before anything is written.
    """
    from crossvit_mtl.data.cache import CacheWriter, parallel_map  # torch only when converting

    mode = label_mode(labels)
    frames = cityscapes_frames(root, tuple(splits))
    with_depth = all(f and f[0].disparity is not None for f in frames.values())
    if not with_depth:
        frames = {s: [Frame(f.stem, f.image, f.label) for f in fs] for s, fs in frames.items()}
    info = DatasetInfo(
        name=f"cityscapes-{labels}", tasks=("segmentation", "depth") if with_depth else ("segmentation",),
        class_names=mode.class_names, palette=mode.palette, depth_kind="metric",
        extra={"source": "cityscapes", "labels": labels})
    loader = _FrameLoader((size[0], size[1]), mode.lut)
    with CacheWriter(out, info, size, overwrite=overwrite, measure_stats=True) as writer:
        for split, split_frames in frames.items():
            writer.write_split(split, len(split_frames), parallel_map(loader, split_frames, workers), progress)
    return Path(out)
