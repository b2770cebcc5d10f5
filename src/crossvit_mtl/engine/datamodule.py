"""The LightningDataModule: owns data sets, their transforms and loaders."""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import lightning.pytorch as pl
import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, default_collate

from crossvit_mtl.data.base import DenseDataset, Sample
from crossvit_mtl.data.common import DatasetInfo
from crossvit_mtl.data.registry import build_dataset
from crossvit_mtl.data.transforms import EvalTransforms, TrainTransforms, build_transforms, collate_padded
from crossvit_mtl.engine.options import plain
from crossvit_mtl.engine.sampling import ResumableSampler
from crossvit_mtl.tasks import is_task


class SelectTasks:
    """Drops the targets of tasks the run does not train, before any augmentation work."""

    def __init__(self, tasks: tuple[str, ...], then):
        self.keep = ("image",) + tuple(tasks)
        self.then = then

    def __call__(self, sample: Sample) -> Sample:
        return self.then({k: v for k, v in sample.items() if k in self.keep})


class DenseDataModule(pl.LightningDataModule):
    """Args:
        dataset: ``synth`` (built-in scenes; rendered on demand, or a cache when ``root`` is
            given), ``cache``, ``cityscapes_mtan``, ``nyuv2_mtan`` or ``folder``.
        root: the data set's folder.
        tasks: the tasks to train, a subset of what the data set provides (default: all).
        options: options of the data set's class (e.g. ``void_as_class`` for MTAN Cityscapes,
            ``length`` for on-demand synthetic scenes).
        train_split / val_split / test_split: ``val`` is what a val rule picks checkpoints on
            (the fit's ``checkpoint_selection``), ``test`` is where results are reported. The
            MTAN copies of Cityscapes and NYUv2 hold train and val only; their configs set
            ``test_split: val`` and are tested on their last weights whatever the rule, as the
            literature reports them (``cli.train.test_best``).
        train_transforms / eval_transforms: settings of the augmentation pipelines
            (``crossvit_mtl.data.transforms.TrainTransforms`` / ``EvalTransforms``); those left
            out keep their defaults (``DEFAULT_TRAIN`` / ``DEFAULT_EVAL``).
        seed: the seed of the training order, of every sample's augmentation and of the samples
            the initial losses are measured on; None: 0. The command line sets it to the run's
            ``seed_everything``.
    """

    def __init__(self, dataset: str = "synth", root: str | None = None, tasks: list[str] | None = None,
                 options: dict[str, Any] | None = None, train_split: str = "train",
                 val_split: str = "val", test_split: str = "test",
                 train_transforms: TrainTransforms = {},  # noqa: B006  # read, never changed
                 eval_transforms: EvalTransforms = {},  # noqa: B006
                 batch_size: PositiveInt = 16, eval_batch_size: PositiveInt | None = None,
                 num_workers: NonNegativeInt = 2, persistent_workers: bool = True, seed: int | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.hparams.update(plain(dict(self.hparams)))  # checkpoints hold plain data, read weights_only
        self.seed = 0 if seed is None else int(seed)
        self.datasets: dict[str, DenseDataset] = {}
        self._sampler: ResumableSampler | None = None
        self._sampler_state: dict[str, int] | None = None
        # Built now, not in setup(): a missing folder or a bad option fails before any work.
        probe = self._build(train_split)
        self.info: DatasetInfo = probe.info
        provided = tuple(self.info.tasks)
        chosen = tuple(tasks) if tasks else provided
        missing = [t for t in chosen if t not in provided]
        if missing:
            bad = [t for t in missing if not is_task(t)]
            what = "is not a task" if bad else f"is not provided by data set {self.info.name!r}"
            raise ValueError(f"tasks: {', '.join(map(repr, missing))} {what} "
                             f"(it provides: {', '.join(provided)})")
        self.tasks = chosen
        self.datasets[train_split] = probe
        self._wrap(probe, train=True)
        for key, split in (("val_split", val_split), ("test_split", test_split)):
            try:
                self.dataset(split)
            except (ValueError, OSError) as err:  # DataError is a ValueError
                what = "results are reported on" if key == "test_split" else "that selects checkpoints"
                raise ValueError(f"data.{key}: {err}; set data.{key} to the split {what}") from None

    def _build(self, split: str) -> DenseDataset:
        hp = self.hparams
        return build_dataset(hp.dataset, hp.root, split=split, **(hp.options or {}))

    def _wrap(self, dataset: DenseDataset, train: bool) -> None:
        config = self.hparams.train_transforms if train else self.hparams.eval_transforms
        dataset.transform = SelectTasks(self.tasks, build_transforms(dataset.info, train, config))

    @property
    def meta(self) -> dict[str, Any]:
        """Plain data the model needs to be built, shown and saved with (linked to the model)."""
        info = asdict(self.info)
        info.pop("extra", None)
        info["tasks"] = list(self.tasks)
        info["task_channels"] = {t: c for t, c in self.info.task_channels().items() if t in self.tasks}
        info["image_size"] = list(self.image_size)
        return json.loads(json.dumps(info))  # tuples -> lists: safe in YAML and checkpoints

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the images the model sees in evaluation."""
        if not hasattr(self, "_image_size"):
            height, width = self.dataset(self.hparams.val_split)[0]["image"].shape[-2:]
            self._image_size = int(height), int(width)
        return self._image_size

    def dataset(self, split: str, train: bool = False) -> DenseDataset:
        key = split if train or split != self.hparams.train_split else f"{split}:eval"
        if key not in self.datasets:
            ds = self._build(split)
            self._wrap(ds, train)
            self.datasets[key] = ds
        return self.datasets[key]

    def _loader(self, split: str, train: bool) -> DataLoader:
        hp = self.hparams
        workers = hp.num_workers
        dataset = self.dataset(split, train)
        sampler: ResumableSampler | UnrepeatedDistributedSampler | None = None
        if train:
            sampler = self._train_sampler(dataset)
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            # Each rank takes every world_size-th sample, none repeated: Lightning's default
            # DistributedSampler pads with repeats, which summed metric states would count twice.
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        return DataLoader(
            dataset, batch_size=hp.batch_size if train else (hp.eval_batch_size or hp.batch_size),
            sampler=sampler, drop_last=train and sampler is not None and len(sampler) > hp.batch_size,
            num_workers=workers, persistent_workers=hp.persistent_workers and workers > 0,
            pin_memory=self._on_cuda(),
            # evaluation keeps each image's size: a batch of several is padded to its largest
            collate_fn=None if train else collate_padded,
            # workers' base seed from a generator of its own, not from the global RNG, whose
            # state a resumed run restores and must find untouched
            generator=torch.Generator().manual_seed(0))

    def _on_cuda(self) -> bool:
        """Batches in page-locked memory when training runs on CUDA: Lightning then copies them
        to the GPU without blocking (``non_blocking=True``), overlapping the next step's work."""
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def _train_sampler(self, dataset: DenseDataset) -> ResumableSampler:
        """One sampler for the whole fit, created when Lightning first asks for the loader (after
        DDP is set up) and kept, so its epoch count survives reloads of the loader."""
        if self._sampler is None:
            self._sampler = ResumableSampler(dataset, seed=self.seed)
            if self._sampler_state is not None:
                self._sampler.load_state_dict(self._sampler_state)
        return self._sampler

    def calibration_batch(self, size: int = 64) -> dict[str, torch.Tensor]:
        """The same ``size`` training samples every time, augmented as in training (each from its
        own seed): what each task's initial loss is measured on (``model.loss_scaling``)."""
        dataset = self.dataset(self.hparams.train_split, train=True)
        generator = torch.Generator().manual_seed(self.seed)
        chosen = torch.randperm(len(dataset), generator=generator)[:size].tolist()
        return default_collate([dataset[(index, index)] for index in chosen])

    def state_dict(self) -> dict[str, Any]:
        """The training order's position, saved in every checkpoint (also mid-epoch)."""
        trainer = self.trainer
        if self._sampler is None or trainer is None:
            return {}
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        finished = batches >= trainer.num_training_batches
        return {"train_order": self._sampler.state_dict(batches * self.hparams.batch_size, finished)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._sampler_state = state.get("train_order")
        if self._sampler is not None and self._sampler_state is not None:
            self._sampler.load_state_dict(self._sampler_state)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.hparams.train_split, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.hparams.val_split, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.hparams.test_split, train=False)
