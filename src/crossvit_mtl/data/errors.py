"""The one exception bad data raises, so users see which file is wrong before training starts."""
from __future__ import annotations

import os


class DataError(ValueError):
    """A data set file is missing, unreadable or holds the wrong thing.

    The message is a single line ``"<file>: <what is wrong>"`` so that the command-line tool
    and ``crossvit-mtl data check`` can print it as is, one problem per line.
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}")


def load_npy(path: str | os.PathLike, mmap: bool = False):
    """``np.load`` that turns a missing, truncated or non-npy file into a DataError."""
    import numpy as np

    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
        if magic != b"\x93NUMPY":
            raise DataError(path, "not a .npy file (no NUMPY header)")
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except (OSError, ValueError, EOFError) as err:
        raise DataError(path, f"not a readable .npy file ({err})") from None


def raise_first(problems: list[DataError], root: str | os.PathLike) -> None:
    """Raise the first of the problems a scan found, saying how many more ``data check`` lists."""
    if not problems:
        return
    first = problems[0]
    if len(problems) > 1:
        first = DataError(first.path, f"{first.problem} (and {len(problems) - 1} more problems; "
                                      f"run `crossvit-mtl data check {root}`)")
    raise first
