"""Model weights as safetensors: tensors only, so loading a file can never run code; and the one
way weights come in (``load_weights``), from this library's files or the published CrossViT ones.

The file's metadata records the preset name and its overrides (and the data set's description
when exported from a training checkpoint), which is all ``create_model`` needs to rebuild the
network: ``create_model(meta["preset"], weights=path, **meta["overrides"])``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crossvit_mtl.engine.checkpoint import CheckpointError, load_state_strict, read_checkpoint
from crossvit_mtl.models.pretrained import LoadReport, PretrainedError, is_published, load_state

METADATA_KEY = "crossvit_mtl"
log = logging.getLogger(__name__)


def save_weights(model: nn.Module, path: str | Path, dataset_meta: dict[str, Any] | None = None) -> Path:
    """Write every tensor of ``model.state_dict()`` and the recipe to rebuild the model."""
    from safetensors.torch import save_file

    recipe = {"preset": getattr(model, "preset_name", None),
              "overrides": getattr(model, "preset_overrides", {}),
              "dataset_meta": dataset_meta}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={METADATA_KEY: json.dumps(recipe)})
    return Path(path)


def _state_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` dict: the network inside a crossvit-mtl training checkpoint, the
    ``model`` entry of a release's checkpoint, or the file's own dict (DDP's ``module.`` dropped)."""
    prefix = "model."
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and any(
            isinstance(k, str) and k.startswith(prefix) for k in obj["state_dict"]):
        obj = {k[len(prefix):]: v for k, v in obj["state_dict"].items() if k.startswith(prefix)}
    elif isinstance(obj, dict):
        wrapped = next((obj[k] for k in ("model", "state_dict", "model_ema") if isinstance(obj.get(k), dict)), None)
        obj = {(k.removeprefix("module.") if isinstance(k, str) else k): v
               for k, v in (obj if wrapped is None else wrapped).items()}
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{path}: not a state dict of tensors (export one with "
                              "`crossvit-mtl export --format safetensors`)")
    return obj


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and the recipe of a weights file.

    ``.safetensors`` is preferred; other files go through ``torch.load(weights_only=True)``,
    which refuses pickled code, and must hold a plain state dict or a training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {'is a folder, expected a' if path.is_dir() else 'no such'} weights file")
    if path.suffix != ".safetensors":
        return _state_of(read_checkpoint(path), path), {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    recipe = json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else {}
    return _state_of(state, path), recipe


def load_weights(model: nn.Module, path: str | Path, partial: bool = False) -> LoadReport:
    """Fill ``model`` from a weights file and say what it did; what does not fit fails in one
    line naming the keys, before anything changes.

    This library's files (safetensors, a training checkpoint, a state dict) must fit exactly,
    unless ``partial``. A published CrossViT file (IBM's release, timm's ``crossvit_*``) is
    recognised by its tensor names and mapped: it must fill the whole encoder, positions
    interpolated to the model's grid; heads of another class count and a dense model's decoder
    stay as initialised. ``partial`` (starting a model to train, ``model.pretrained``) loads
    whatever fits, provided part of the encoder does and none of it has another shape.
    """
    state, _ = read_weights(path)
    published = is_published(state)
    if not (published or partial):
        load_state_strict(model, state, path)
        return LoadReport(loaded=sorted(state))
    try:
        report = load_state(model, state, "some" if partial else "encoder")
    except PretrainedError as err:
        raise CheckpointError(f"{path}: {err}") from None
    log.info("%s: %s", path, report)
    return report


def model_from_weights(path: str | Path) -> tuple[nn.Module, dict[str, Any] | None]:
    """Rebuild an exported model from its file alone: the network and its data-set description."""
    from crossvit_mtl.models import create_model

    state, recipe = read_weights(path)
    if not recipe.get("preset"):
        raise CheckpointError(f"{path}: records no preset; use create_model(name, weights=path, **options)")
    model = create_model(recipe["preset"], **recipe.get("overrides", {}))
    load_state_strict(model, state, path)
    return model.eval(), recipe.get("dataset_meta")
