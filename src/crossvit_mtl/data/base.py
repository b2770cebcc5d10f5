"""The one Dataset base class: subclasses read raw arrays, the base turns them into tensors."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from crossvit_mtl.data.common import DatasetInfo
from crossvit_mtl.tasks import get_task, is_task

Sample = dict[str, torch.Tensor]


def to_tensors(raw: dict[str, Any]) -> Sample:
    """Raw numpy arrays (HWC images, HW maps) -> the project's tensor layout (see DatasetInfo):
    the image here, every task's target by its task.

    Images may be uint8 (0..255) or floating point in [0, 1]; both become float32 in [0, 1].
    """
    out: Sample = {}
    for key, value in raw.items():
        if key == "image":
            arr = np.asarray(value)
            img = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
            # contiguous CHW: per-pixel transforms and batch collation are ~4x slower on a view
            out[key] = (img.float().div_(255.0) if arr.dtype == np.uint8 else img.float()).contiguous()
        elif is_task(key):
            out[key] = get_task(key).to_tensor(value)
        else:
            raise KeyError(f"unknown sample key {key!r}")
    return out


class DenseDataset(Dataset):
    """Base of every data set: ``load(i)`` returns raw arrays, ``transform`` acts on tensors."""

    info: DatasetInfo

    def __init__(self, transform: Callable[[Sample], Sample] | None = None):
        self.transform = transform

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, index: int) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample_id(self, index: int) -> str:
        """The name of sample ``index`` in its data set (what files written for it are named by):
        its position unless the data set names its samples."""
        return str(index)

    def image_size(self, index: int) -> tuple[int, int]:
        """(H, W) of sample ``index``'s image as stored, before any transform. This default loads
        the sample; data sets that can read the size alone override it."""
        height, width = np.shape(self.load(index)["image"])[:2]
        return int(height), int(width)

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        """``dataset[i]``, or ``dataset[(i, seed)]`` to draw the sample's augmentation from its own
        seed (what ``ResumableSampler`` yields), leaving the global RNG as it was."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        sample = to_tensors(self.load(index))
        if self.transform is None:
            return sample
        if seed is None:
            return self.transform(sample)
        # the CPU generator alone, which the transforms draw from and fork_rng restores:
        # torch.manual_seed would also seed every accelerator's generators (on CUDA, state left
        # changed; without it, a queued call that formats a stack trace, 0.5 ms a sample)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self.transform(sample)
