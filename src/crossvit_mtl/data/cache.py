"""The project's compact cache: one layout that every converted or generated data set ends up in.

Layout (``H, W`` the image size, ``N`` the samples of a split)::

    {root}/meta.json            name, tasks, class names, palette, depth_kind, scene_classes,
                                crop_keeps_class, mean, std (of the train images), image_size,
                                split counts, version
    {root}/{split}/images.npy   (N, H, W, 3) uint8
    {root}/{split}/labels.npy   (N, H, W)    uint8, IGNORE_INDEX (255) = not annotated
    {root}/{split}/depth.npy    (N, H, W)    float32, 0 = invalid
    {root}/{split}/normals.npy  (N, H, W, 3) float16, all-zero = invalid
    {root}/{split}/edges.npy    (N, H, W)    uint8, 1 = boundary
    {root}/{split}/classes.npy  (N,)         int64
    ...                         one array per task, as its task's ``storage`` says

Only the arrays of the tasks the data set has are written. Plain ``.npy`` files are read with
``np.load(mmap_mode="r")``: no decoding per sample, the OS page cache shares them between
DataLoader workers, and a whole split never has to fit in memory.
"""
from __future__ import annotations

import functools
import json
import multiprocessing
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap

from crossvit_mtl.data.base import DenseDataset, Sample
from crossvit_mtl.data.common import DatasetInfo
from crossvit_mtl.data.errors import DataError, load_npy
from crossvit_mtl.tasks import Storage, get_task, is_task, task_names

FORMAT = "crossvit-mtl-cache"
#: 3: edge maps of the synthetic scenes, ``task_options``
FORMAT_VERSION = 3
META_KEYS = ("format", "version", "name", "tasks", "class_names", "palette", "depth_kind",
             "scene_classes", "crop_keeps_class", "mean", "std", "image_size", "splits")
IMAGES = Storage("images.npy", np.uint8, (3,))


def storage(key: str) -> Storage:
    """How the array of sample key ``key`` (the image or a task) is stored."""
    return IMAGES if key == "image" else get_task(key).storage


def array_shape(key: str, count: int, size: tuple[int, int]) -> tuple[int, ...]:
    """Shape of the stacked array of ``key`` for ``count`` samples of ``size`` (H, W)."""
    trailing = storage(key).trailing
    return (count,) if trailing is None else (count, *size, *trailing)


def parallel_map(fn: Callable, items: Iterable, workers: int = 1) -> Iterator:
    """``map`` in order, over ``workers`` processes when more than one (rendering, decoding)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with multiprocessing.get_context().Pool(workers) as pool:
        yield from pool.imap(fn, items, chunksize=4)


def progress_bar(items: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    """A tqdm progress line on stderr for long conversions and checks, or ``items`` as is."""
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit="img", file=sys.stderr, leave=False)


class CacheWriter:
    """Writes a cache split by split, one sample at a time, into memory-mapped arrays.

    Everything goes to a hidden temporary folder beside ``root`` that replaces ``root`` only in
    :meth:`commit`, so an interrupted conversion never leaves a half-written cache behind. Use it
    as a context manager: it commits on success and removes the temporary folder on error.
    An existing ``root`` is kept unless ``overwrite=True``. With ``measure_stats`` the mean and
    std written are those of the train images (real data), else ``info``'s (synthetic scenes,
    whose statistics are known, so that a cache and on-demand rendering normalise alike).
    """

    def __init__(self, root: str | os.PathLike, info: DatasetInfo, size: tuple[int, int],
                 overwrite: bool = False, measure_stats: bool = False):
        self.root = Path(root)
        self.info = info
        self.measure_stats = measure_stats
        self.size = (int(size[0]), int(size[1]))
        self.overwrite = overwrite
        self._check_target()
        self.tmp = self.root.with_name(f".{self.root.name}.tmp-{os.getpid()}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.splits: dict[str, int] = {}
        self._meta_of_info = info.as_meta()
        self._stats: dict[str, np.ndarray] = {}  # split -> [pixels, sum r,g,b, sum of squares r,g,b]

    def _check_target(self) -> None:
        if not self.root.exists():
            return
        if not self.overwrite:
            raise FileExistsError(f"{self.root}: already exists; pass overwrite=True "
                                  "(--overwrite) to replace it")
        if self.root.is_file() or (any(self.root.iterdir()) and not (self.root / "meta.json").is_file()):
            raise FileExistsError(f"{self.root}: exists and is not a cache; refusing to replace it")

    def write_split(self, split: str, count: int, samples: Iterable[dict[str, Any]],
                    progress: bool = False) -> None:
        """Write ``count`` raw samples (the dicts ``DenseDataset.load`` returns) as ``split``."""
        keys = ("image",) + self.info.tasks
        folder = self.tmp / split
        folder.mkdir()
        arrays = {key: open_memmap(folder / storage(key).file, mode="w+", dtype=storage(key).dtype,
                                   shape=array_shape(key, count, self.size)) for key in keys}
        stats = np.zeros(7)
        written = 0
        for index, sample in enumerate(progress_bar(samples, count, f"{self.info.name} {split}", progress)):
            if index >= count:
                raise ValueError(f"split {split!r}: more than the announced {count} samples")
            for key in keys:
                arrays[key][index] = self._encode(key, sample[key], split, index)
            if self.measure_stats:
                pixels = arrays["image"][index].reshape(-1, 3).astype(np.float64) / 255.0
                stats += np.concatenate([[len(pixels)], pixels.sum(0), (pixels ** 2).sum(0)])
            written = index + 1
        if written != count:
            raise ValueError(f"split {split!r}: got {written} samples, announced {count}")
        for array in arrays.values():
            array.flush()
        self.splits[split] = count
        self._stats[split] = stats

    def _encode(self, key: str, value: Any, split: str, index: int) -> np.ndarray:
        """Check one sample's array against the layout and convert it to the stored dtype."""
        arr = np.asarray(value)
        expected = array_shape(key, 1, self.size)[1:]
        if arr.shape != expected:
            raise ValueError(f"split {split!r} sample {index}: {key} has shape {arr.shape}, "
                             f"expected {expected}")
        if key == "image":
            return arr if arr.dtype == np.uint8 else np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
        bad, what = get_task(key).bad_values(arr[None], self._meta_of_info)
        if bad.any():
            raise ValueError(f"split {split!r} sample {index}: {key} has {what}")
        return arr.astype(storage(key).dtype)

    def _meta(self) -> dict[str, Any]:
        info = self.info
        mean, std = np.array(info.mean), np.array(info.std)
        stats = self._stats.get("train", sum(self._stats.values(), np.zeros(7)))
        if self.measure_stats and stats[0] > 0:
            mean = stats[1:4] / stats[0]
            std = np.sqrt(np.maximum(stats[4:7] / stats[0] - mean ** 2, 1e-12))
        return {"format": FORMAT, "version": FORMAT_VERSION, "name": info.name,
                "tasks": list(info.tasks), "class_names": list(info.class_names),
                "palette": [list(c) for c in info.palette], "depth_kind": info.depth_kind,
                "scene_classes": list(info.scene_classes), "crop_keeps_class": bool(info.crop_keeps_class),
                "mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std],
                "image_size": list(self.size), "splits": dict(self.splits), "task_options": info.task_options,
                "extra": info.extra}

    def commit(self) -> Path:
        """Write meta.json and move the finished cache into place."""
        (self.tmp / "meta.json").write_text(json.dumps(self._meta(), indent=2))
        self._check_target()
        old = self.root.with_name(f".{self.root.name}.old-{os.getpid()}")
        if self.root.exists():
            self.root.rename(old)
        self.tmp.rename(self.root)
        shutil.rmtree(old, ignore_errors=True)
        return self.root

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def read_meta(root: str | os.PathLike) -> dict[str, Any]:
    """Parse and check ``{root}/meta.json``; every problem is a DataError naming the file."""
    root = Path(root)
    path = root / "meta.json"
    if not root.is_dir():
        raise DataError(root, "cache folder not found")
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(path, "missing: not a crossvit-mtl cache (write one with "
                              "`crossvit-mtl data synth` or `crossvit-mtl data cityscapes`)") from None
    except (OSError, ValueError) as err:
        raise DataError(path, f"not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise DataError(path, "not a JSON object")
    missing = [key for key in META_KEYS if key not in meta]
    if missing:
        raise DataError(path, f"missing keys: {', '.join(missing)}")
    if meta["format"] != FORMAT or meta["version"] != FORMAT_VERSION:
        raise DataError(path, f"format {meta['format']!r} version {meta['version']!r}; this "
                              f"version of crossvit-mtl reads {FORMAT!r} version {FORMAT_VERSION}")
    unknown = [t for t in meta["tasks"] if not is_task(t)]
    if unknown:
        raise DataError(path, f"unknown tasks {unknown} (known: {', '.join(task_names())})")
    size = meta["image_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise DataError(path, f"image_size must be [height, width], got {size!r}")
    return meta


def info_from_meta(meta: dict[str, Any], tasks: Iterable[str] | None = None) -> DatasetInfo:
    return DatasetInfo(
        name=meta["name"], tasks=tuple(meta["tasks"] if tasks is None else tasks),
        class_names=tuple(meta["class_names"]), palette=tuple(tuple(c) for c in meta["palette"]),
        depth_kind=meta["depth_kind"], scene_classes=tuple(meta["scene_classes"]),
        crop_keeps_class=bool(meta["crop_keeps_class"]), task_options=dict(meta.get("task_options") or {}),
        mean=tuple(meta["mean"]), std=tuple(meta["std"]), extra=dict(meta.get("extra", {})))


def open_split(root: Path, meta: dict[str, Any], split: str, tasks: Iterable[str]) -> dict[str, np.ndarray]:
    """Memory-map the arrays of ``split`` after checking their shapes and dtypes against meta.json."""
    if split not in meta["splits"]:
        raise DataError(root / "meta.json", f"no split {split!r} (has: {', '.join(meta['splits']) or 'none'})")
    if not (root / split).is_dir():
        raise DataError(root / split, "split folder missing")
    return {key: open_array(root, meta, split, key) for key in ("image", *tasks)}


def open_array(root: Path, meta: dict[str, Any], split: str, key: str) -> np.ndarray:
    """Memory-map one stacked array, checking its shape and dtype against meta.json."""
    count, size = meta["splits"][split], tuple(meta["image_size"])
    name, dtype = storage(key).file, storage(key).dtype
    path = root / split / name
    array = load_npy(path, mmap=True)
    expected = array_shape(key, count, size)
    if array.shape != expected:
        raise DataError(path, f"shape {array.shape}, expected {expected} (meta.json: "
                              f"{count} samples of {size[0]}x{size[1]})")
    if array.dtype != dtype:
        raise DataError(path, f"dtype {array.dtype}, expected {np.dtype(dtype)}")
    return array


#: bytes of a stacked array read at once when its values are checked
CHECK_CHUNK_BYTES = 1 << 25


@functools.lru_cache(maxsize=64)
def _check_values(path: str, mtime_ns: int, task: str, meta_json: str) -> None:
    """Refuse an array holding values its task cannot have (class ids outside the classes, an edge
    map that is not binary ...), naming the file, the sample and the value: one vectorised pass over
    the memory map, chunk by chunk; remembered per file."""
    array = load_npy(path, mmap=True)
    meta = json.loads(meta_json)
    step = max(1, CHECK_CHUNK_BYTES // max(1, array[0].nbytes)) if len(array) else 1
    for start in range(0, len(array), step):
        chunk = np.asarray(array[start:start + step])
        bad, what = get_task(task).bad_values(chunk, meta)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(path, f"sample {start + i} has {what}; `crossvit-mtl data check` lists every sample")


class CachedDataset(DenseDataset):
    """A split of a cache. Layout, shapes, the requested tasks and the values of integer targets
    (class ids, edge maps: a cheap pass, so that no loss ever meets an id outside the classes) are
    checked in ``__init__``; every other value by ``crossvit-mtl data check`` (a full read)."""

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 tasks: Iterable[str] | None = None, transform: Callable[[Sample], Sample] | None = None):
        super().__init__(transform)
        self.root, self.split = Path(root), split
        meta = read_meta(self.root)
        tasks = tuple(meta["tasks"]) if tasks is None else tuple(tasks)
        absent = [t for t in tasks if t not in meta["tasks"]]
        if absent:
            raise DataError(self.root / "meta.json", f"task(s) {', '.join(absent)} not in this "
                                                     f"cache (has: {', '.join(meta['tasks'])})")
        self.meta = meta
        self.info = info_from_meta(meta, tasks)
        self._arrays: dict[str, np.ndarray] | None = open_split(self.root, meta, split, tasks)
        self._count = meta["splits"][split]
        meta_json = json.dumps(self.info.as_meta(), sort_keys=True)
        for task in tasks:
            if np.issubdtype(storage(task).dtype, np.integer):
                path = self.root / split / storage(task).file
                _check_values(str(path), path.stat().st_mtime_ns, task, meta_json)

    def __len__(self) -> int:
        return self._count

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps are reopened in each DataLoader worker instead of being pickled.
        return {**self.__dict__, "_arrays": None}

    def load(self, index: int) -> dict[str, Any]:
        if self._arrays is None:
            self._arrays = open_split(self.root, self.meta, self.split, self.info.tasks)
        raw: dict[str, Any] = {}
        for key, array in self._arrays.items():
            value = array[index]
            raw[key] = int(value) if storage(key).trailing is None else np.array(value)
        return raw
