"""`crossvit-mtl data check`: read a whole data set and list every problem, not just the first.

The data set classes check what is cheap when they are built (folders, counts, names, shapes);
this reads every value too (label ranges, NaN/Inf, corrupt files), which is worth doing once
after a conversion or download and before a long run. The readers are imported where used so
that building the command-line parser does not import torch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossvit_mtl.data.errors import DataError
from crossvit_mtl.tasks import get_task

KINDS = ("cache", "cityscapes", "cityscapes_mtan", "nyuv2_mtan", "folder", "pascal_context", "nyud_v2")
CHUNK = 64  # samples read at a time from a cache


@dataclass
class CheckReport:
    kind: str
    counts: dict[str, int]  # split -> samples
    problems: list[str]

    def summary(self, path: str | os.PathLike) -> str:
        splits = ", ".join(f"{split} {n}" for split, n in self.counts.items()) or "no splits"
        return f"{path}: {self.kind}, {splits} samples, no problems found"


def detect_kind(path: str | os.PathLike) -> str | None:
    """Guess the layout of a data set folder from the files it has."""
    root = Path(path)
    if (root / "meta.json").is_file():
        return "cache"
    if (root / "leftImg8bit").is_dir():
        return "cityscapes"
    if (root / "ImageSets" / "Context").is_dir():
        return "pascal_context"
    if (root / "gt_sets").is_dir():
        return "nyud_v2"
    splits = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    if any((p / "image").is_dir() for p in splits):
        return "nyuv2_mtan" if any((p / "normal").is_dir() for p in splits) else "cityscapes_mtan"
    if any(c.is_dir() for p in splits for c in p.iterdir()):
        return "folder"
    return None


def check_dataset(path: str | os.PathLike, kind: str = "auto") -> list[str]:
    """Every problem of the data set at ``path``, one line each; empty when all is well."""
    return scan(path, kind).problems


def scan(path: str | os.PathLike, kind: str = "auto", progress: bool = False) -> CheckReport:
    root = Path(path)
    if not root.is_dir():
        return CheckReport(kind, {}, [str(DataError(root, "folder not found"))])
    if kind == "auto":
        detected = detect_kind(root)
        if detected is None:
            return CheckReport("unknown", {}, [str(DataError(root, "not a recognised data set layout "
                                                                  f"(one of: {', '.join(KINDS)})"))])
        kind = detected
    if kind not in KINDS:
        raise ValueError(f"unknown data set kind {kind!r} (choose from auto, {', '.join(KINDS)})")
    counts, problems = {"cache": _scan_cache, "cityscapes": _scan_cityscapes,
                        "cityscapes_mtan": _scan_mtan, "nyuv2_mtan": _scan_mtan,
                        "folder": _scan_folder, "pascal_context": _scan_listed,
                        "nyud_v2": _scan_listed}[kind](root, kind, progress)
    return CheckReport(kind, counts, [str(p) for p in problems])


def _scan_cache(root: Path, kind: str, progress: bool) -> tuple[dict[str, int], list[DataError]]:
    from crossvit_mtl.data import cache as cache_format

    try:
        meta = cache_format.read_meta(root)
    except DataError as err:
        return {}, [err]
    problems = []
    for split in meta["splits"]:
        for key in ("image", *meta["tasks"]):
            try:
                array = cache_format.open_array(root, meta, split, key)
            except DataError as err:
                problems.append(err)
                continue
            problems += _array_problems(root / split / cache_format.storage(key).file, key, array, meta)
    return dict(meta["splits"]), problems


def _array_problems(path: Path, key: str, array: np.ndarray, meta: dict) -> list[DataError]:
    """Which samples of a stacked cache array hold values the task cannot have."""
    if key == "image" or not len(array):
        return []
    task, bad, what = get_task(key), [], ""
    for i in range(0, len(array), CHUNK):
        chunk_bad, what = task.bad_values(np.asarray(array[i:i + CHUNK]), meta)
        bad.append(chunk_bad)
    flags = np.concatenate(bad)
    if not flags.any():
        return []
    return [DataError(path, f"{int(flags.sum())} of {len(flags)} samples have {what} "
                            f"(first: sample {int(np.flatnonzero(flags)[0])})")]


def _splits(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan_mtan(root: Path, kind: str, progress: bool) -> tuple[dict[str, int], list[DataError]]:
    from crossvit_mtl.data.mtan import MTANCityscapes, MTANNYUv2

    cls = MTANCityscapes if kind == "cityscapes_mtan" else MTANNYUv2
    counts, problems = {}, []
    for split in _splits(root):
        counts[split], found = cls.scan_split(root, split, progress=progress)
        problems += found
    return counts, problems


def _scan_listed(root: Path, kind: str, progress: bool) -> tuple[dict[str, int], list[DataError]]:
    from crossvit_mtl.data.nyud import NYUDv2
    from crossvit_mtl.data.pascal_context import PascalContext

    return {"pascal_context": PascalContext, "nyud_v2": NYUDv2}[kind].scan(root, progress)


def _scan_cityscapes(root: Path, kind: str, progress: bool) -> tuple[dict[str, int], list[DataError]]:
    from crossvit_mtl.data import cityscapes
    from crossvit_mtl.data.cache import progress_bar

    lut = cityscapes.label_mode("category8").lut  # every official id is valid in it
    counts, problems = {}, []
    for split in _splits(root / cityscapes.FOLDERS["image"]):
        frames, found = cityscapes.find_frames(root, split)
        problems += found
        counts[split] = len(frames)
        for frame in progress_bar(frames, len(frames), f"check {split}", progress):
            problems += cityscapes.frame_problems(frame, lut)
    return counts, problems


def _scan_folder(root: Path, kind: str, progress: bool) -> tuple[dict[str, int], list[DataError]]:
    from crossvit_mtl.data.cache import progress_bar
    from crossvit_mtl.data.folder import ImageFolderDataset, read_rgb

    counts, problems = {}, []
    for split in _splits(root):
        try:
            dataset = ImageFolderDataset(root, split)
        except DataError as err:
            problems.append(err)
            continue
        counts[split] = len(dataset)
        for path, _ in progress_bar(dataset.samples, len(dataset), f"check {split}", progress):
            try:
                read_rgb(path, dataset.size)
            except DataError as err:
                problems.append(err)
    return counts, problems
