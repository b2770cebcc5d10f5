"""`test` writes chosen tasks' maps as 8-bit PNGs named by each sample's id, at the image's own
size, for evaluators outside the project: SEISM (MATLAB) or ``crossvit-mtl edges`` for edges, the
papers' saliency scripts for saliency.

A map is the task's prediction (``Task.prediction``: a probability for edges and saliency, a
class id for class maps) cropped back to where the image lies in the evaluated tensor
(``data.transforms.content_size``: padding is cut away) and, where evaluation resized the image,
resized back to it. A probability p is stored as ``round(255 p)``, the 8-bit map the edge metric
scores (``tasks.edge.to_8bit``): the PNGs score as ``test`` scores them.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image

from crossvit_mtl.data.transforms import content_size
from crossvit_mtl.tasks import get_task, is_task
from crossvit_mtl.tasks.edge import to_8bit


def writable(task: str) -> bool:
    """Whether a task's maps fit an 8-bit grey PNG: a dense task whose target is one 8-bit map
    (class ids, or a binary map whose prediction is a probability)."""
    if not is_task(task):
        return False
    spec = get_task(task)
    return spec.kind == "dense" and spec.storage.trailing == () and np.dtype(spec.storage.dtype) == np.uint8


class PredictionMaps(pl.Callback):
    """During ``test``: ``<run_dir>/<folder>/<split>/<task>/<id>.png`` for every test sample and
    each of ``tasks``; a file of the same name is replaced (a new test of the same split)."""

    def __init__(self, tasks: Sequence[str], folder: str = "predictions"):
        unknown = [t for t in tasks if not writable(t)]
        if unknown:
            raise ValueError(f"save_predictions: {unknown[0]!r} is not a task whose maps are 8-bit images "
                             "(a dense task of class ids or of a binary map: edge, saliency, segmentation ...)")
        self.tasks = list(dict.fromkeys(tasks))
        self.folder = folder
        self._batches: list[list[int]] = []
        self._dirs: dict[str, Path] = {}
        self._written = 0

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule  # type: ignore[attr-defined]  # Lightning's property, untyped
        split = datamodule.hparams.test_split
        self._dataset = datamodule.dataset(split)
        self._eval_config = datamodule.hparams.eval_transforms
        loaders = trainer.test_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        assert loader is not None  # Lightning builds the test loaders before the epoch starts
        # the indices of every batch this process evaluates, in order (a rank's share under DDP)
        self._batches = ([list(b) for b in loader.batch_sampler] if loader.batch_sampler is not None
                         else [[i] for i in loader.sampler])
        model_tasks = list(getattr(pl_module, "tasks", ()))
        missing = [t for t in self.tasks if t not in model_tasks]
        if missing:
            raise ValueError(f"save_predictions: the model has no task {missing[0]!r} (its tasks: "
                             f"{', '.join(model_tasks)})")
        root = Path(trainer.default_root_dir) / self.folder / split
        self._dirs = {task: root / task for task in self.tasks}
        for folder in self._dirs.values():
            folder.mkdir(parents=True, exist_ok=True)
        self._written = 0

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if not isinstance(outputs, Mapping):
            raise TypeError("PredictionMaps needs the module's test_step to return its outputs per task")
        for j, index in enumerate(self._batches[batch_idx]):
            sample_id = self._dataset.sample_id(index)
            size = self._dataset.image_size(index)
            box = content_size(size, self._eval_config)
            for task in self.tasks:
                value = get_task(task).prediction(outputs[task][j].detach().float().cpu())
                write_png(self._dirs[task] / f"{sample_id}.png", to_image(value, box, size))
                self._written += 1

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._dirs:
            where = next(iter(self._dirs.values())).parent
            rank_zero_info(f"wrote {self._written} maps ({', '.join(self.tasks)}) as <id>.png under {where}/")


def to_image(value: torch.Tensor, box: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """A (H, W) prediction -> the uint8 map of the image: cropped to ``box`` (the top-left region
    the image fills), resized to ``size`` where the two differ (probabilities bilinearly, class ids
    by nearest neighbour), probabilities as ``round(255 p)``."""
    value = value[: box[0], : box[1]]
    if value.is_floating_point():
        if tuple(box) != tuple(size):
            value = F.interpolate(value[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        return to_8bit(value).numpy()
    if tuple(box) != tuple(size):
        value = F.interpolate(value[None, None].float(), size=size, mode="nearest-exact")[0, 0]
    return value.to(torch.uint8).numpy()


def write_png(path: Path, array: np.ndarray) -> None:
    """Written beside its final name and renamed over it: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(partial, format="PNG")
    os.replace(partial, path)
