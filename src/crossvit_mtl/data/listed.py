"""Data sets whose samples are ids listed in a split file, read one file per task: the benchmarks.

PASCAL-Context and NYUD-v2 as the multi-task papers distribute them share this shape. What they
share lives here: the split list, the choice of tasks (only their files are read), the cheap checks
at construction, the full scan of ``crossvit-mtl data check``, and the file readers, each of
which names its file in the DataError it raises.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from crossvit_mtl.data.base import DenseDataset, Sample
from crossvit_mtl.data.common import DatasetInfo
from crossvit_mtl.data.errors import DataError, load_npy, raise_first

#: key -> (the file it comes from, the function that reads and checks it)
Readers = dict[str, tuple[Path, Callable[[], np.ndarray]]]


# ------------------------------------------------------------------------------------ readers
def read_ids(path: Path) -> list[str]:
    """The ids of a split file, one per line; blank lines and ``#`` comments skipped."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(path, "split file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(path, f"not a readable text file ({err})") from None
    ids: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        sample_id = line.strip()
        if not sample_id or sample_id.startswith("#"):
            continue
        if sample_id in first_line:
            raise DataError(path, f"id {sample_id!r} is listed twice (lines {first_line[sample_id]} and {number})")
        first_line[sample_id] = number
        ids.append(sample_id)
    if not ids:
        raise DataError(path, "split file lists no ids")
    return ids


def _open_image(path: Path) -> Image.Image:
    """Open and fully decode an image (truncated files fail here, naming the file)."""
    try:
        image = Image.open(path)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(path, f"cannot read image ({err})") from None
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as err:
        image.close()
        raise DataError(path, f"cannot read image ({err})") from None
    return image


def read_rgb(path: Path) -> np.ndarray:
    """Any image file as a writable uint8 (H, W, 3) RGB array, as the references' ``convert('RGB')``."""
    with _open_image(path) as image:
        return np.array(image.convert("RGB"))


def read_png_map(path: Path) -> np.ndarray:
    """A single-channel label PNG as integers; palette PNGs give their indices, not colours."""
    with _open_image(path) as image:
        if image.mode not in ("L", "P", "I;16", "I"):
            raise DataError(path, f"expected a single-channel PNG (mode L or P), got mode {image.mode}")
        return np.array(image)


def read_png_rgb(path: Path) -> np.ndarray:
    """An 8-bit RGB PNG (encoded normals) as uint8 (H, W, 3)."""
    with _open_image(path) as image:
        if image.mode != "RGB":
            raise DataError(path, f"expected an 8-bit RGB PNG, got mode {image.mode}")
        return np.array(image)


def read_mat(path: Path, key: str) -> Any:
    """Variable ``key`` of a MATLAB file (scipy.io.loadmat)."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        content = loadmat(path)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except (OSError, ValueError, TypeError, MatReadError) as err:
        raise DataError(path, f"not a readable MATLAB file ({err})") from None
    if key not in content:
        found = ", ".join(k for k in content if not k.startswith("__")) or "nothing"
        raise DataError(path, f"no variable {key!r} (it holds: {found})")
    return content[key]


def read_float_map(path: Path, what: str) -> np.ndarray:
    """A .npy map of finite floats, (H, W) or (H, W, 1), as float32 (H, W)."""
    array = load_npy(path)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise DataError(path, f"{what} has shape {array.shape}, expected HxW or HxWx1")
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.integer):
        raise DataError(path, f"{what} has dtype {array.dtype}, expected numbers")
    if not np.isfinite(array).all():
        raise DataError(path, f"{what} contains NaN or Inf")
    return array.astype(np.float32)


def decode_normals(encoded: np.ndarray) -> np.ndarray:
    """8-bit encoded normals -> unit vectors: ``2 x / 255 - 1``, then scaled to length 1.

    The references decode without rescaling and scale both sides to unit length in their metric;
    doing it here gives the same angles and the unit vectors the project's normals are.
    """
    return unit_vectors(2.0 * encoded.astype(np.float32) / 255.0 - 1.0)


def unit_vectors(vectors: np.ndarray) -> np.ndarray:
    """(H, W, 3) scaled to length 1; all-zero vectors (invalid) stay zero."""
    vectors = vectors.astype(np.float32)
    norm = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norm, out=np.zeros_like(vectors), where=norm > 0)


# ----------------------------------------------------------------------------------- data set
class ListedDataset(DenseDataset):
    """Samples listed by id in a split file; subclasses give the paths and readers of an id."""

    #: every task the data set provides, in the order ``load`` returns them
    TASKS: tuple[str, ...] = ()
    SPLITS: tuple[str, ...] = ("train", "val")
    #: the splits ``data check`` scans (every sample of the others is in one of these)
    SCANNED_SPLITS: tuple[str, ...] = ("train", "val")
    #: name, classes and evaluation settings; ``tasks`` is set per instance
    INFO: DatasetInfo

    def __init__(self, root: str | os.PathLike, split: str = "train", tasks: Iterable[str] | None = None,
                 transform: Callable[[Sample], Sample] | None = None):
        super().__init__(transform)
        raise_first(self._setup(root, split, tasks, check_first=True), root)

    # -- subclasses -------------------------------------------------------------------------
    def split_ids(self, split: str) -> list[str]:
        """The ids of ``split`` (a DataError names the split file if it is unusable)."""
        raise NotImplementedError  # pragma: no cover

    def paths(self, sample_id: str, tasks: Iterable[str]) -> dict[str, Path]:
        """The files ``image`` and ``tasks`` of ``sample_id`` are read from."""
        raise NotImplementedError  # pragma: no cover

    def readers(self, sample_id: str, tasks: Iterable[str]) -> Readers:
        """``image`` first, then each task of ``tasks``: its file and its reader."""
        raise NotImplementedError  # pragma: no cover

    def configure(self) -> list[DataError]:
        """Anything decided from the files of the first id (a layout variant); its problems."""
        return []

    # -- shared -----------------------------------------------------------------------------
    def _setup(self, root: str | os.PathLike, split: str, tasks: Iterable[str] | None,
               check_first: bool) -> list[DataError]:
        name = type(self).__name__
        if split not in self.SPLITS:
            raise ValueError(f"{name} has no split {split!r} (choose from {', '.join(self.SPLITS)}; "
                             "the benchmark's test labels are not public, results are reported on val)")
        chosen = tuple(self.TASKS if tasks is None else tasks)
        unknown = [t for t in chosen if t not in self.TASKS]
        if unknown or not chosen:
            raise ValueError(f"{name} has no task(s) {', '.join(map(repr, unknown)) or '(none chosen)'} "
                             f"(it provides: {', '.join(self.TASKS)})")
        self.root, self.split, self.tasks = Path(root), split, chosen
        self.info = dataclasses.replace(self.INFO, tasks=chosen)
        self.ids: list[str] = []
        if not self.root.is_dir():
            return [DataError(self.root, "data set folder not found")]
        try:
            self.ids = self.split_ids(split)
        except DataError as err:
            return [err]
        problems = self.configure()
        if check_first and not problems:
            problems = [DataError(path, f"file not found ({key} of {self.ids[0]!r}, the first id of split {split!r})")
                        for key, path in self.paths(self.ids[0], self.tasks).items() if not path.is_file()]
        return problems

    def __len__(self) -> int:
        return len(self.ids)

    def sample_id(self, index: int) -> str:
        return self.ids[index]

    def image_size(self, index: int) -> tuple[int, int]:
        """From the image file's header, without decoding it."""
        path = self.paths(self.ids[index], ())["image"]
        try:
            with Image.open(path) as image:
                width, height = image.size
        except FileNotFoundError:
            raise DataError(path, "file not found") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(path, f"cannot read image ({err})") from None
        return height, width

    def load(self, index: int) -> dict[str, Any]:
        readers = self.readers(self.ids[index], self.tasks)
        image = readers.pop("image")[1]()
        sample: dict[str, Any] = {"image": image}
        for key, (path, read) in readers.items():
            sample[key] = read()
            _same_size(path, sample[key], image)
        return sample

    def sample_problems(self, index: int) -> list[DataError]:
        """Every problem of one sample (for ``data check``): each file of every task read."""
        readers = self.readers(self.ids[index], self.TASKS)
        problems: dict[str, DataError] = {}  # tasks that share a file report it once
        image = None
        for key, (path, read) in readers.items():
            try:
                array = read()
                if key == "image":
                    image = array
                elif image is not None:
                    _same_size(path, array, image)
            except DataError as err:
                problems.setdefault(str(err), err)
        return list(problems.values())

    @classmethod
    def scan(cls, root: str | os.PathLike, progress: bool = False) -> tuple[dict[str, int], list[DataError]]:
        """(samples per split, every problem) over the splits in ``SCANNED_SPLITS``."""
        from crossvit_mtl.data.cache import progress_bar

        counts, problems = {}, []
        for split in cls.SCANNED_SPLITS:
            self = cls.__new__(cls)
            DenseDataset.__init__(self)
            problems += self._setup(root, split, None, check_first=False)
            counts[split] = len(self.ids)
            for index in progress_bar(range(len(self.ids)), len(self.ids), f"check {split}", progress):
                problems += self.sample_problems(index)
        return counts, problems


def _same_size(path: Path, array: np.ndarray, image: np.ndarray) -> None:
    if array.shape[:2] != image.shape[:2]:
        raise DataError(path, f"size {array.shape[0]}x{array.shape[1]} differs from its image's "
                              f"{image.shape[0]}x{image.shape[1]}")
