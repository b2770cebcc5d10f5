"""Training order that a killed run can pick up mid-epoch, and the RNG states that go with it.

A resumed run must see the batches an uninterrupted run would have seen, augmented the same way.
So the order of an epoch and every sample's augmentation are functions of (seed, epoch) alone:
the sampler yields ``(index, augmentation seed)`` pairs, the data set seeds its transforms with
the second (``DenseDataset.__getitem__``), and nothing depends on loader workers' RNG streams or
on how many batches they had prefetched when the process died.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DistributedSampler


class ResumableSampler(DistributedSampler):
    """A shuffling sampler (one shard per rank under DDP) that counts its own epochs and can
    start an epoch part-way through.

    Lightning calls ``set_epoch`` only after a resumed epoch's iterator exists, so the epoch comes
    from the sampler's own count, restored with ``load_state_dict``; ``set_epoch`` is ignored.
    Being a ``DistributedSampler``, Lightning does not wrap it in another one under DDP.
    """

    def __init__(self, dataset, seed: int = 0, num_replicas: int | None = None, rank: int | None = None):
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.epoch = 0          # the epoch being iterated (or the next one before any iteration)
        self._skip = 0          # samples of that epoch already trained on, skipped once
        self._started = False   # whether ``epoch`` has been iterated already

    def set_epoch(self, epoch: int) -> None:
        """Ignored: see the class docstring."""

    def order(self, epoch: int) -> tuple[list[int], list[int]]:
        """This rank's sample indices and augmentation seeds for ``epoch``, in order."""
        g = torch.Generator().manual_seed(self.seed + epoch)
        n = len(self.dataset)  # type: ignore[arg-type]  # a map-style data set
        indices = torch.randperm(n, generator=g)
        seeds = torch.randint(0, 2 ** 62, (n,), generator=g)
        if self.total_size > n:  # as DistributedSampler: pad with the first samples
            pad = self.total_size - n
            indices = torch.cat([indices, indices.repeat(pad // n + 1)[:pad]])
            seeds = torch.cat([seeds, seeds.repeat(pad // n + 1)[:pad]])
        mine = slice(self.rank, self.total_size, self.num_replicas)
        return indices[mine].tolist(), seeds[mine].tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # Eager, not a generator: with workers=0 a generator would read the epoch only at the
        # first batch, after hooks that may have run in between.
        if self._started:
            self.epoch += 1
            self._skip = 0
        self._started = True
        indices, seeds = self.order(self.epoch)
        skip, self._skip = self._skip, 0
        return iter(list(zip(indices, seeds))[skip:])

    def state_dict(self, samples_done: int, epoch_finished: bool) -> dict[str, int]:
        """Where training stands: the next epoch to run and how many of its samples are done."""
        if epoch_finished:
            return {"epoch": self.epoch + 1, "samples_done": 0}
        return {"epoch": self.epoch, "samples_done": samples_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self._skip = int(state["samples_done"])
        self._started = False


def capture_rng_states() -> dict[str, Any]:
    """Every global RNG a training step may draw from (dropout, drop-path, RLW...), as plain data
    that ``torch.load(weights_only=True)`` accepts."""
    # numpy's stubs type the state as a tuple of unions; with legacy=True it is MT19937's tuple
    kind, keys, pos, has_gauss, gauss = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RestoreRNGStates(Callback):
    """Saves the global RNG states in every checkpoint (``state_dict``) and puts them back just
    before the first training batch after a resume, so the sanity check and loader start-up in
    between cannot move them away from where the saved run had them."""

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return capture_rng_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        """Checkpoints written before this callback kept the states saved them at the top level."""
        self._to_restore = checkpoint.get("rng_states")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._to_restore is not None:
            restore_rng_states(self._to_restore)
            self._to_restore = None
