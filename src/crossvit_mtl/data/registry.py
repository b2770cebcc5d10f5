"""One constructor for every data set, so configs and the command line name data sets by string."""
from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from typing import Any

from crossvit_mtl.data.base import DenseDataset, Sample

#: name -> "module:Class" under crossvit_mtl.data; imported on use
DATASETS = {
    "synth": "synth:SynthScenes",  # rendered on demand; a cache of it when ``root`` is given
    "cache": "cache:CachedDataset",
    "cityscapes_mtan": "mtan:MTANCityscapes",
    "nyuv2_mtan": "mtan:MTANNYUv2",
    "folder": "folder:ImageFolderDataset",
    "pascal_context": "pascal_context:PascalContext",
    "nyud_v2": "nyud:NYUDv2",
}


def _resolve(target: str) -> type[DenseDataset]:
    module, cls = target.split(":")
    return getattr(importlib.import_module(f"crossvit_mtl.data.{module}"), cls)


def build_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train",
                  transform: Callable[[Sample], Sample] | None = None, **options: Any) -> DenseDataset:
    """Build data set ``name`` (see DATASETS) for ``split``; ``options`` go to its class.

    ``"synth"`` renders scenes on demand without ``root`` and reads a cache written by
    ``crossvit-mtl data synth`` with it. Unknown names and options fail with one line naming them.
    """
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
