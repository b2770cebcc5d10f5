"""Reading and writing tensors: checkpoints through ``torch.load(weights_only=True)``, weights as
safetensors, the one unwrapping of a file's state dict, the one way a message names keys, and the
one error every damaged or unfitting file gives.

The lowest layer of the library (torch and safetensors only), so that the model zoo, the engine
and the command line load files the same way without importing one another. The safetensors
metadata records the preset name and its overrides (and the data set's description when exported
from a training checkpoint): ``create_model(meta["preset"], weights=path, **meta["overrides"])``.
"""
from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint or weights file that cannot be used; the message names the file and the reason."""


#: how the two formats ``torch.save`` writes begin: a zip archive, or a pickle (protocol 2+)
TORCH_HEADERS = (b"PK\x03\x04", b"\x80")
#: the safetensors metadata key holding the recipe to rebuild the model
METADATA_KEY = "crossvit_mtl"


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
    except Exception as err:
        first = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: {first})") from None


def key_lists(parts: list[tuple[str, list[str]]], counted: bool = False) -> str:
    """``label[ count]: first five (+N more)`` for each non-empty list of keys, joined by ``; ``:
    how every message about a load names its keys."""
    out = []
    for label, items in parts:
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            out.append(f"{label}{f' {len(items)}' if counted else ''}: {', '.join(items[:5])}{more}")
    return "; ".join(out)


def state_mismatch(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str | None:
    """How ``state`` fails to fit a model whose state dict is ``own``, naming the missing,
    unexpected and mis-shaped entries (the first five of each); None if it fits."""
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in sorted(set(own) & set(state))
              if getattr(state[k], "shape", None) != own[k].shape]
    return key_lists([("missing", sorted(set(own) - set(state))), ("unexpected", sorted(set(state) - set(own))),
                      ("shape mismatch", shapes)]) or None


def training_state(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The network's tensors inside a training checkpoint (the module's ``model.`` entries)."""
    prefix = "model."
    return {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}


def save_weights(model: nn.Module, path: str | Path, dataset_meta: dict[str, Any] | None = None) -> Path:
    """Write every tensor of ``model.state_dict()`` and the recipe to rebuild the model."""
    from safetensors.torch import save_file

    recipe = {"preset": getattr(model, "preset_name", None),
              "overrides": getattr(model, "preset_overrides", {}),
              "dataset_meta": dataset_meta}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={METADATA_KEY: json.dumps(recipe)})
    return Path(path)


def state_dict_of(obj: Any, source: str | Path) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` dict: the network inside a crossvit-mtl training checkpoint, the
    ``model`` entry of a release's checkpoint, or the file's own dict (DDP's ``module.`` dropped)."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and any(
            isinstance(k, str) and k.startswith("model.") for k in obj["state_dict"]):
        obj = training_state(obj)
    elif isinstance(obj, dict):
        wrapped = next((obj[k] for k in ("model", "state_dict", "model_ema") if isinstance(obj.get(k), dict)), None)
        obj = {(k.removeprefix("module.") if isinstance(k, str) else k): v
               for k, v in (obj if wrapped is None else wrapped).items()}
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{source}: not a state dict of tensors (export one with "
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
        return state_dict_of(read_checkpoint(path), path), {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - a safetensors file, not a dict
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    recipe = json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else {}
    return state_dict_of(state, path), recipe
