"""One constructor for every data set, so configs and the command line name data sets by string.

Besides the built-in names, ``register_dataset`` adds a ``DenseDataset`` class under a name at run
time, and a package can ship data sets under the ``crossvit_mtl.datasets`` entry-point group (each
entry a ``DenseDataset`` subclass), as it ships tasks under ``crossvit_mtl.tasks``.
"""
from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from crossvit_mtl.data.base import DenseDataset, Sample

#: the entry-point group plug-in packages register data sets under
ENTRY_POINT_GROUP = "crossvit_mtl.datasets"

#: name -> "module:Class" under crossvit_mtl.data (imported on use), or a registered class
DATASETS: dict[str, str | type[DenseDataset]] = {
    "synth": "synth:SynthScenes",  # rendered on demand; a cache of it when ``root`` is given
    "cache": "cache:CachedDataset",
    "cityscapes_mtan": "mtan:MTANCityscapes",
    "nyuv2_mtan": "mtan:MTANNYUv2",
    "folder": "folder:ImageFolderDataset",
    "pascal_context": "pascal_context:PascalContext",
    "nyud_v2": "nyud:NYUDv2",
}


def register_dataset(name: str, cls: type[DenseDataset], replace: bool = False) -> None:
    """Make a data set class known by ``name`` (configs' ``data.dataset``)."""
    if not (isinstance(cls, type) and issubclass(cls, DenseDataset)):
        raise TypeError(f"a data set must be a crossvit_mtl.data.base.DenseDataset subclass, got {cls!r}")
    if name in DATASETS and not replace and DATASETS[name] is not cls:
        raise ValueError(f"data set {name!r} is already registered")
    DATASETS[name] = cls


def unregister_dataset(name: str) -> None:
    DATASETS.pop(name, None)


def _load_plugins() -> None:
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in DATASETS:
            register_dataset(entry.name, entry.load())


def _resolve(target: str | type[DenseDataset]) -> Callable[..., DenseDataset]:
    """The class registered under a name: every data set takes ``split`` and ``transform`` beside
    its own options (the base class declares none of them)."""
    if not isinstance(target, str):
        return target
    module, cls = target.split(":")
    return getattr(importlib.import_module(f"crossvit_mtl.data.{module}"), cls)


def build_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train",
                  transform: Callable[[Sample], Sample] | None = None, **options: Any) -> DenseDataset:
    """Build data set ``name`` (see DATASETS) for ``split``; ``options`` go to its class.

    ``"synth"`` renders scenes on demand without ``root`` and reads a cache written by
    ``crossvit-mtl data synth`` with it. Unknown names and options fail with one line naming them.
    """
    if name not in DATASETS:
        _load_plugins()
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r} (choose from {', '.join(DATASETS)})")
    target = DATASETS["cache"] if name == "synth" and root is not None else DATASETS[name]
    cls = _resolve(target)
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p, spec in params.items() if p not in ("self", "root", "split", "transform")
                and spec.kind not in (spec.VAR_POSITIONAL, spec.VAR_KEYWORD)]
    unknown = [key for key in options if key not in accepted]
    if unknown:
        raise ValueError(f"data set {name!r} has no option(s) {', '.join(map(repr, unknown))} "
                         f"(accepted: {', '.join(accepted) or 'none'})")
    if root is None and "root" in params:
        raise ValueError(f"data set {name!r} needs a root folder")
    args = {} if root is None else {"root": root}
    return cls(split=split, transform=transform, **args, **options)
