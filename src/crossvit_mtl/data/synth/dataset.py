"""The scenes as a data set: rendered on demand, or into a cache with ``write_synth``."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from crossvit_mtl.data.base import DenseDataset
from crossvit_mtl.data.cache import CacheWriter, parallel_map
from crossvit_mtl.data.common import CATEGORY_NAMES, CATEGORY_PALETTE, DatasetInfo
from crossvit_mtl.data.synth.base import MEAN, SCENE_CLASSES, STD
from crossvit_mtl.data.synth.render import render_sample

#: every task the scenes give ground truth for
SYNTH_TASKS = ("segmentation", "depth", "normal", "edge", "classification")
#: Version of what the scenes hold, kept in a cache's ``extra`` (``renderer``): raised whenever the
#: same (seed, index) draws another scene, so a cache of older scenes is told apart (2: traffic
#: lights placed alike in every class).
RENDERER = 2


def synth_info() -> DatasetInfo:
    """Description of the synthetic scenes for the engine (all four tasks, metric depth)."""
    return DatasetInfo(name="synth", tasks=SYNTH_TASKS, class_names=CATEGORY_NAMES, palette=CATEGORY_PALETTE,
                       depth_kind="metric", scene_classes=SCENE_CLASSES, crop_keeps_class=False,
                       mean=MEAN, std=STD, extra={"renderer": RENDERER})


def measure_stats(n: int = 200, seed: int = 0, height: int = 128, width: int = 256):
    """Per-channel mean and std of ``n`` rendered images in [0, 1]: how MEAN and STD were obtained."""
    images = np.stack([render_sample(seed, i, height, width)["image"] for i in range(n)]) / 255.0
    return tuple(images.mean((0, 1, 2)).round(4).tolist()), tuple(images.std((0, 1, 2)).round(4).tolist())


class SynthScenes(DenseDataset):
    """The synthetic scenes as a data set, rendered on demand (no cache).

    ``train``, ``val`` and ``test`` render from different seeds (:func:`synth_split_seed`,
    the same streams ``crossvit-mtl data synth`` caches), so no split repeats another's scenes.
    """

    info = synth_info()

    def __init__(self, split: str = "train", length: int = 2000, seed: int = 0, height: int = 128,
                 width: int = 256, transform=None):
        super().__init__(transform)
        if length < 0 or seed < 0:
            raise ValueError("length and seed must be >= 0")
        self.split, self.length, self.height, self.width = split, length, height, width
        self.seed = synth_split_seed(seed, split)

    def __len__(self) -> int:
        return self.length

    def load(self, index: int) -> dict[str, Any]:
        return render_sample(self.seed, index, self.height, self.width)


#: The splits of the synthetic scenes, each rendered from its own stream (:func:`synth_split_seed`):
#: ``val`` selects checkpoints, ``test`` is the held-out split results are reported on.
SYNTH_SPLITS = ("train", "val", "test")


def write_synth(out: str | os.PathLike, train: int = 1000, val: int = 200, test: int = 200, height: int = 128,
                width: int = 256, seed: int = 0, workers: int = 1, overwrite: bool = False,
                progress: bool = False) -> Path:
    """Render the built-in synthetic scenes into a cache: train, val and test, each from its own
    random stream. Rendering once and reading the cache is what makes long runs on synthetic data cheap."""
    counts = {"train": train, "val": val, "test": test}
    with CacheWriter(out, synth_info(), (height, width), overwrite=overwrite) as writer:
        for split in SYNTH_SPLITS:
            render = functools.partial(render_sample, synth_split_seed(seed, split), height=height, width=width)
            writer.write_split(split, counts[split], parallel_map(render, range(counts[split]), workers), progress)
    return Path(out)


def synth_split_seed(seed: int, split: str) -> int:
    """The seed a split of the synthetic scenes is rendered with: no split repeats another's scenes."""
    if split not in SYNTH_SPLITS:
        raise ValueError(f"the synthetic scenes have splits {', '.join(SYNTH_SPLITS)}, not {split!r}")
    return seed + 1_000_003 * SYNTH_SPLITS.index(split)
