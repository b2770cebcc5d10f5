"""Image classification from a folder per class: ``root/{split}/{class}/*.png|jpg|jpeg``.

Read with Pillow (no torchvision dependency) and resized to one size so samples batch. The class
list is the sorted union of the class folders of every split, so a class missing from ``val``
does not shift the indices of the others.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from crossvit_mtl.data.base import DenseDataset, Sample
from crossvit_mtl.data.common import DatasetInfo
from crossvit_mtl.data.errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg")


def read_rgb(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Decode an image file to uint8 RGB of ``size`` (H, W); corrupt files are a DataError."""
    try:
        with Image.open(path) as file:
            img = file.convert("RGB")
            if img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.array(img)
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(path, f"cannot read image ({err})") from None


class ImageFolderDataset(DenseDataset):
    """One image-level class per sample (task ``classification``), from class sub-folders."""

    def __init__(self, root: str | os.PathLike, split: str = "train", size: tuple[int, int] = (128, 256),
                 transform: Callable[[Sample], Sample] | None = None):
        super().__init__(transform)
        self.root, self.split, self.size = Path(root), split, (int(size[0]), int(size[1]))
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise DataError(split_dir, "split folder missing (expected ROOT/SPLIT/CLASS/*.png|jpg)")
        classes = sorted({p.name for s in self.root.iterdir() if s.is_dir()
                          for p in s.iterdir() if p.is_dir()})
        self.samples = [(path, index) for index, name in enumerate(classes)
                        for path in sorted((split_dir / name).glob("*"))
                        if path.suffix.lower() in EXTENSIONS]
        if not self.samples:
            raise DataError(split_dir, f"no {'/'.join(EXTENSIONS)} images in class sub-folders")
        self.info = DatasetInfo(name=f"folder:{self.root.name}", tasks=("classification",),
                                scene_classes=tuple(classes))

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> dict[str, Any]:
        path, label = self.samples[index]
        return {"image": read_rgb(path, self.size), "classification": label}
