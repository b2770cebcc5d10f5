"""Training checkpoints as Lightning writes and reads them: atomically, weights-only, mid-epoch;
a write that finds the disk full names the file, and the previous checkpoint stays as it was."""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from crossvit_mtl.serialization import CheckpointError, read_checkpoint


def full_disk(err: BaseException | None) -> OSError | None:
    """The ``OSError`` of a write that failed for lack of space (or quota), however it was
    re-raised: torch's writer turns it into ``RuntimeError: [enforce fail at inline_container.cc]
    unexpected pos`` with the ``OSError`` as its context."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return err
        err = err.__cause__ or err.__context__
    return None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside the target, fsyncs it and renames it into
    place: a crash while saving leaves the previous ``last.ckpt`` intact, never a truncated one,
    and a disk that fills is an ``OSError`` (ENOSPC) naming the checkpoint, the partial file gone.
    Reads with ``weights_only=True`` always (``--ckpt_path`` of fit/validate/test), a refused or
    unreadable file, or one that is no training checkpoint, giving a one-line ``CheckpointError``."""

    #: the checkpoint read last, which the module names if its weights do not fit
    last_path: str | None = None

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        if "://" in str(path):
            ckpt = super().load_checkpoint(path, map_location, weights_only=True)
        else:
            ckpt = read_checkpoint(path, map_location)
        if not (isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict)
                and "pytorch-lightning_version" in ckpt):
            raise CheckpointError(f"{path}: not a training checkpoint (no Lightning state_dict and version; "
                                  "`crossvit-mtl fit` writes them)")
        self.last_path = str(path)
        return ckpt

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote file systems: Lightning's own transactional write
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as err:
            Path(tmp).unlink(missing_ok=True)
            space = full_disk(err)
            if space is not None:
                raise OSError(space.errno, space.strerror, str(path)) from err
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class StepCheckpoint(Callback):
    """Writes ``last.ckpt`` every ``every_n_steps`` optimiser steps, mid-epoch, so a killed run
    loses at most that many steps. The epoch's last batch is left to the epoch-end checkpoint,
    which follows the module's end-of-epoch updates (DWA's loss history)."""

    def __init__(self, dirpath: str | Path, every_n_steps: int):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps = every_n_steps
        self._saved_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if (step == 0 or step % self.every_n_steps or step == self._saved_step
                or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch):
            return
        trainer.save_checkpoint(self.path)
        self._saved_step = step
