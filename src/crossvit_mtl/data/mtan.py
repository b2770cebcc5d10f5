"""The MTAN-preprocessed Cityscapes and NYUv2, as MTAN, LibMTL, CAGrad, Nash-MTL and FAMO use them.

Layout: ``{root}/{split}/{folder}/{i}.npy`` with one file per sample and per task, ``i`` an
integer; every folder of a split must hold the same indices. Images are HxWx3 float in [0, 1];
some copies store them channel-first (3xHxW), which is accepted too. Depth and label maps may be
HxW, HxWx1 or 1xHxW. Dtypes are checked on every load rather than assumed.

Layout, counts and names are checked when a data set is built (a DataError names the first
missing file); the values (ranges, NaN/Inf) when a sample is loaded and, for every file at once,
by ``crossvit-mtl data check``.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from crossvit_mtl.data.base import DenseDataset, Sample
from crossvit_mtl.data.cache import progress_bar
from crossvit_mtl.data.common import CATEGORY_NAMES, CATEGORY_PALETTE, IGNORE_INDEX, DatasetInfo
from crossvit_mtl.data.errors import DataError, load_npy, raise_first

NYUV2_CLASS_NAMES = ("bed", "books", "ceiling", "chair", "floor", "furniture", "objects",
                     "painting", "sofa", "table", "tv", "wall", "window")
#: Our choice, not a standard: matplotlib's tab10 colours, then the first three light tab20 ones.
NYUV2_PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                 (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
                 (174, 199, 232), (255, 187, 120), (152, 223, 138))

#: label folder of the MTAN Cityscapes copies -> number of classes (-1 = not annotated)
CITYSCAPES_LABEL_FOLDERS = {"label_7": 7, "label": 7, "label_19": 19}


def _as_map(arr: np.ndarray, path: Path) -> np.ndarray:
    """HxW, HxWx1 or 1xHxW -> HxW."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        return arr[..., 0]
    if arr.ndim == 3 and arr.shape[0] == 1:
        return arr[0]
    if arr.ndim != 2:
        raise DataError(path, f"shape {arr.shape}, expected HxW, HxWx1 or 1xHxW")
    return arr


def _as_hwc(arr: np.ndarray, path: Path) -> np.ndarray:
    """HxWx3 or 3xHxW -> HxWx3."""
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr
    if arr.ndim == 3 and arr.shape[0] == 3:
        return arr.transpose(1, 2, 0)
    raise DataError(path, f"shape {arr.shape}, expected HxWx3 or 3xHxW")


def _check_floats(arr: np.ndarray, path: Path, what: str) -> np.ndarray:
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(path, f"{what} has dtype {arr.dtype}, expected floating point")
    if not np.isfinite(arr).all():
        raise DataError(path, f"{what} contains NaN or Inf")
    return arr.astype(np.float32, copy=False)


class _MTANDataset(DenseDataset):
    """What the MTAN Cityscapes and NYUv2 copies share: indexing by ``{i}.npy``, checked readers."""

    #: task -> folder name; subclasses may choose the label folder per instance
    FOLDERS: dict[str, str] = {}
    DEFAULT_TASKS: tuple[str, ...] = ()
    #: set by ``_configure``: the folder of each task, and the class count
    folders: dict[str, str]
    num_classes: int

    def __init__(self, root: str | os.PathLike, split: str = "train", tasks: Iterable[str] | None = None,
                 transform: Callable[[Sample], Sample] | None = None, **options: Any):
        super().__init__(transform)
        raise_first(self._setup(root, split, tasks, **options), root)

    @classmethod
    def scan_split(cls, root: str | os.PathLike, split: str = "train", progress: bool = False,
                   **options: Any) -> tuple[int, list[DataError]]:
        """(number of samples, every problem): the layout, then the content of every file."""
        self = cls.__new__(cls)
        DenseDataset.__init__(self)
        problems = self._setup(root, split, None, **options)
        files = [(key, path) for key, by_stem in self.files.items() for _, path in sorted(by_stem.items())]
        for key, path in progress_bar(files, len(files), f"check {split}", progress):
            try:
                self._read(key, path)
            except DataError as err:
                problems.append(err)
        return len(self.stems), problems

    # -- subclasses -------------------------------------------------------------------------
    def _configure(self, split_dir: Path, **options: Any) -> None:
        """Set ``self.folders``, ``self.num_classes`` and ``self.info`` from the options."""
        raise NotImplementedError  # pragma: no cover

    def _map_labels(self, labels: np.ndarray) -> np.ndarray:
        return np.where(labels < 0, IGNORE_INDEX, labels)

    # -- shared -----------------------------------------------------------------------------
    def _setup(self, root, split, tasks, **options) -> list[DataError]:
        self.root, self.split = Path(root), split
        split_dir = self.root / split
        self.files: dict[str, dict[int, Path]] = {}
        self.stems: list[int] = []
        self.size: tuple[int, int] | None = None
        if not self.root.is_dir():
            return [DataError(self.root, "data set folder not found")]
        if not split_dir.is_dir():
            splits = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            return [DataError(split_dir, f"split folder missing (found: {', '.join(splits) or 'nothing'})")]
        self._configure(split_dir, **options)
        problems: list[DataError] = []
        tasks = tuple(self.DEFAULT_TASKS if tasks is None else tasks)
        unknown = [t for t in tasks if t not in self.DEFAULT_TASKS]
        if unknown:
            raise ValueError(f"{type(self).__name__} has no task(s) {', '.join(unknown)} "
                             f"(has: {', '.join(self.DEFAULT_TASKS)})")
        self.info = dataclasses.replace(self.info, tasks=tasks)
        for key in ("image", *tasks):
            folder = split_dir / self.folders[key]
            if not folder.is_dir():
                found = ", ".join(sorted(p.name for p in split_dir.iterdir() if p.is_dir())) or "nothing"
                problems.append(DataError(folder, f"folder missing (needed for {key}; found: {found})"))
                continue
            self.files[key] = files = {}
            for path in folder.glob("*.npy"):
                if path.stem.isdigit():
                    files[int(path.stem)] = path
                else:
                    problems.append(DataError(path, "file name is not an integer index {i}.npy"))
        self.stems = sorted(set().union(*(f.keys() for f in self.files.values())))
        if not self.stems and not problems:
            problems.append(DataError(split_dir / self.folders["image"], "no {i}.npy files"))
        for key, files in self.files.items():
            for stem in self.stems:
                if stem not in files:
                    other = next(f[stem] for f in self.files.values() if stem in f)
                    problems.append(DataError(split_dir / self.folders[key] / f"{stem}.npy",
                                              f"missing, but {other.parent.name}/{other.name} exists"))
        problems += self._check_first_headers()
        return problems

    def _check_first_headers(self) -> list[DataError]:
        """Read the header of each folder's first file: wrong layouts fail before training."""
        problems = []
        for key, files in self.files.items():
            if not files:
                continue
            path = files[min(files)]
            try:
                header = load_npy(path, mmap=True)
                shape = (_as_hwc if key in ("image", "normal") else _as_map)(header, path).shape[:2]
                if self.size is None:
                    self.size = shape
                elif shape != self.size:
                    raise DataError(path, f"size {shape[0]}x{shape[1]} differs from the images' "
                                          f"{self.size[0]}x{self.size[1]}")
            except DataError as err:
                problems.append(err)
        return problems

    def _read(self, key: str, path: Path) -> Any:
        """Load and check one file; returns the raw array the base class expects."""
        arr = load_npy(path)
        if key in ("image", "normal"):
            arr = _as_hwc(arr, path)
        else:
            arr = _as_map(arr, path)
        if self.size is not None and arr.shape[:2] != self.size:
            raise DataError(path, f"size {arr.shape[0]}x{arr.shape[1]}, expected "
                                  f"{self.size[0]}x{self.size[1]} like the images")
        if key == "image":
            if arr.dtype == np.uint8:
                return arr
            arr = _check_floats(arr, path, "image")
            if arr.min(initial=0) < -1e-3 or arr.max(initial=0) > 1 + 1e-3:
                raise DataError(path, f"image values in [{arr.min():.3g}, {arr.max():.3g}], "
                                      f"expected floats in [0, 1]")
            return np.clip(arr, 0, 1)
        if key == "segmentation":
            if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
                raise DataError(path, f"labels have dtype {arr.dtype}, expected numbers")
            if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
                raise DataError(path, "labels contain NaN, Inf or non-integer values")
            if arr.min(initial=0) < -1 or arr.max(initial=0) >= self.num_classes:
                raise DataError(path, f"label values in [{arr.min():g}, {arr.max():g}], expected "
                                      f"-1 (not annotated) to {self.num_classes - 1}")
            return self._map_labels(arr.astype(np.int64)).astype(np.uint8)
        arr = _check_floats(arr, path, key)
        if key == "depth" and arr.min(initial=0) < 0:
            raise DataError(path, f"negative {self.info.depth_kind} values (min {arr.min():g}); 0 marks invalid")
        return arr

    def __len__(self) -> int:
        return len(self.stems)

    def load(self, index: int) -> dict[str, Any]:
        stem = self.stems[index]
        return {key: self._read(key, files[stem]) for key, files in self.files.items()}


class MTANCityscapes(_MTANDataset):
    """MTAN-preprocessed Cityscapes: 128x256 images, 2975 train / 500 val.

    Labels: the folder ``label_7`` (or ``label`` in the thesis's copy) holds the 7 non-void
    Cityscapes categories (flat, construction, object, nature, sky, human, vehicle) as 0..6 and
    **-1 for void / not annotated**, which becomes IGNORE_INDEX. With ``void_as_class=True``
    -1 becomes class 0 and 0..6 become 1..7: the 8 Cityscapes categories of the thesis. The
    folder ``label_19`` holds the 19 Cityscapes train classes. ``label_folder=None`` picks the
    first of label_7, label, label_19 present.

    Depth: the ``depth`` folder is **disparity (inverse depth), not metres**: values in about
    [0, 0.5], 0 where the stereo matcher found nothing (most pixels, the sky among them). It is
    kept as it is, with ``info.depth_kind = "disparity"``, so results compare with the published
    abs-err figures (e.g. 0.0125). Relative error divides by the target, so near-zero
    disparities (far away things) make Rel Err huge and unstable: report abs err on this data.
    For metres, convert the official Cityscapes download (``crossvit-mtl data cityscapes``).
    """

    FOLDERS = {"image": "image", "depth": "depth"}
    DEFAULT_TASKS = ("segmentation", "depth")

    def __init__(self, root: str | os.PathLike, split: str = "train", tasks: Iterable[str] | None = None,
                 transform: Callable[[Sample], Sample] | None = None, label_folder: str | None = None,
                 void_as_class: bool = False):
        super().__init__(root, split, tasks, transform, label_folder=label_folder, void_as_class=void_as_class)

    def _configure(self, split_dir: Path, label_folder: str | None = None,  # type: ignore[override]
                   void_as_class: bool = False) -> None:
        if label_folder is not None and label_folder not in CITYSCAPES_LABEL_FOLDERS:
            raise ValueError(f"label_folder {label_folder!r} is not one of {', '.join(CITYSCAPES_LABEL_FOLDERS)}")
        if label_folder is None:
            label_folder = next((f for f in CITYSCAPES_LABEL_FOLDERS if (split_dir / f).is_dir()), "label_7")
        self.num_classes = CITYSCAPES_LABEL_FOLDERS[label_folder]
        if void_as_class and self.num_classes != 7:
            raise ValueError(f"void_as_class needs the 7-class labels, not {label_folder}")
        self.void_as_class = void_as_class
        self.folders = {**self.FOLDERS, "segmentation": label_folder}
        if self.num_classes == 19:
            from crossvit_mtl.data.cityscapes import label_mode

            mode = label_mode("train19")
            names, palette = mode.class_names, mode.palette
        else:
            skip = 0 if void_as_class else 1
            names, palette = CATEGORY_NAMES[skip:], CATEGORY_PALETTE[skip:]
        self.info = DatasetInfo(name="cityscapes_mtan", tasks=self.DEFAULT_TASKS, class_names=names,
                                palette=palette, depth_kind="disparity",
                                extra={"label_folder": label_folder, "void_as_class": void_as_class})

    def _map_labels(self, labels: np.ndarray) -> np.ndarray:
        return labels + 1 if self.void_as_class else super()._map_labels(labels)


class MTANNYUv2(_MTANDataset):
    """MTAN-preprocessed NYUv2: 288x384 images, 795 train / 654 val.

    Labels 0..12 (bed, books, ceiling, chair, floor, furniture, objects, painting, sofa, table,
    tv, wall, window) with -1 not annotated (-> IGNORE_INDEX); depth in metres (0 = invalid);
    unit surface normals, all-zero where invalid. The palette is ours (see NYUV2_PALETTE).
    """

    FOLDERS = {"image": "image", "segmentation": "label", "depth": "depth", "normal": "normal"}
    DEFAULT_TASKS = ("segmentation", "depth", "normal")

    def _configure(self, split_dir: Path) -> None:  # type: ignore[override]
        self.num_classes = len(NYUV2_CLASS_NAMES)
        self.folders = dict(self.FOLDERS)
        self.info = DatasetInfo(name="nyuv2_mtan", tasks=self.DEFAULT_TASKS, class_names=NYUV2_CLASS_NAMES,
                                palette=NYUV2_PALETTE, depth_kind="metric")
