"""Rebuilding a trained network from a training checkpoint, without executing pickled code."""
from __future__ import annotations

import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn



class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the reason."""


#: how the two formats ``torch.save`` writes begin: a zip archive, or a pickle (protocol 2+)
TORCH_HEADERS = (b"PK\x03\x04", b"\x80")


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only, so a file
    carrying a pickled payload is refused before any of it runs. Whatever else is wrong with the
    file (missing, empty, truncated, not written by ``torch.save``) is one ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {'is a folder, expected a' if path.is_dir() else 'no such'} checkpoint file")
    with path.open("rb") as handle:
        head = handle.read(4)
    if not head:
        raise CheckpointError(f"{path}: empty file")
    if not head.startswith(TORCH_HEADERS):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (written by neither torch.save nor Lightning)")
    try:
        with warnings.catch_warnings():  # damaged pickles warn about their protocol before failing
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        detail = next((line.split("error:", 1)[-1].strip() for line in str(err).splitlines()
                       if "Unsupported global" in line), None)
        if detail:  # a pickle that names code to run: the payload a weights-only load refuses
            raise CheckpointError(f"{path}: refused to load (it holds more than weights: "
                                  f"{detail.split(' was not')[0]})") from None
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt pickle data)") from None
    except Exception as err:  # noqa: BLE001 - torch.load fails in many ways on damaged files
        first = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: {first})") from None


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The network of a training checkpoint and the data-set description it was trained with."""
    ckpt = read_checkpoint(path)
    hparams = ckpt.get("hyper_parameters") or {}
    meta = hparams.get("dataset_meta")
    if "state_dict" not in ckpt or not meta or "model" not in hparams:
        raise CheckpointError(f"{path}: not a crossvit-mtl training checkpoint "
                              "(needs state_dict and hyper_parameters.model/dataset_meta)")
    from crossvit_mtl.engine.module import DenseTaskModule

    model = DenseTaskModule.build_network(hparams["model"], hparams.get("model_options"), meta)
    prefix = "model."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    load_state_strict(model, state, path)
    return model.eval(), meta


def state_mismatch(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str | None:
    """How ``state`` fails to fit a model whose state dict is ``own``, naming the missing,
    unexpected and mis-shaped entries (the first five of each); None if it fits."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in sorted(set(own) & set(state))
              if getattr(state[k], "shape", None) != own[k].shape]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            parts.append(f"{label}: {', '.join(items[:5])}{more}")
    return "; ".join(parts) or None


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load every tensor or fail naming the missing, unexpected and mis-shaped entries."""
    problem = state_mismatch(model.state_dict(), state)
    if problem:
        raise CheckpointError(f"{source}: weights do not fit the model; {problem}")
    model.load_state_dict(state)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside the target, fsyncs it and renames it into
    place: a crash while saving leaves the previous ``last.ckpt`` intact, never a truncated one.
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
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
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
