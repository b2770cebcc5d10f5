"""The model zoo: ``create_model(name, **overrides)`` and ``list_models()``, timm-style."""
from __future__ import annotations

import copy
import fnmatch
import inspect

from torch import nn

from crossvit_mtl.models.crossvit import CrossViT
from crossvit_mtl.models.dense import CrossViTSeg, DenseCrossViT
from crossvit_mtl.models.presets import PRESETS
from crossvit_mtl.models.thesis import ThesisSegNet

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "crossvit": CrossViT, "thesis": ThesisSegNet, "seg": CrossViTSeg, "mtl": DenseCrossViT,
}


def list_models(pattern: str = "*") -> list[str]:
    """Preset names matching a shell-style pattern, in zoo order."""
    return [name for name in PRESETS if fnmatch.fnmatch(name, pattern)]


def _accepted_keys(cls: type) -> set[str]:
    keys: set[str] = set()
    for klass in cls.__mro__:
        if klass is nn.Module or "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        keys |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return keys - {"self"}


def model_config(name: str, **overrides) -> dict:
    """The full keyword set a preset builds with, overrides applied and checked by name."""
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(PRESETS)}")
    config = copy.deepcopy(PRESETS[name])
    cls = ARCHITECTURES[config.pop("arch")]
    unknown = sorted(set(overrides) - _accepted_keys(cls))
    if unknown:
        raise ValueError(f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
                         f"options: {', '.join(sorted(_accepted_keys(cls)))}")
    config.update(overrides)
    return config


def create_model(name: str, weights: str | None = None, **overrides) -> nn.Module:
    """Build a preset; ``overrides`` replace its hyper-parameters (unknown names are refused)."""
    config = model_config(name, **overrides)
    model = ARCHITECTURES[PRESETS[name]["arch"]](**config)
    model.preset_name = name
    model.preset_overrides = dict(overrides)
    if weights is not None:
        from crossvit_mtl.export.weights import load_weights

        load_weights(model, weights)
    return model


def create_task_model(name: str, task_channels: dict[str, int], **overrides) -> nn.Module:
    """A preset sized for a data set's tasks: class counts go to ``num_classes`` or ``tasks``.

    Single-task presets refuse task sets they cannot predict, naming both.
    """
    arch = PRESETS[name]["arch"] if name in PRESETS else None
    single = {"seg": "segmentation", "thesis": "segmentation", "crossvit": "classification"}
    if arch in single:
        if set(task_channels) != {single[arch]}:
            raise ValueError(f"model {name!r} predicts only {single[arch]!r}, but the tasks are "
                             f"{sorted(task_channels)}; use a crossvit_mtl_* model")
        overrides.setdefault("num_classes", task_channels[single[arch]])
    else:
        overrides.setdefault("tasks", dict(task_channels))
    return create_model(name, **overrides)


def as_task_dict(output) -> dict:
    """Classifiers return logits; the engine speaks of ``{task: output}`` everywhere."""
    return output if isinstance(output, dict) else {"classification": output}


__all__ = ["ARCHITECTURES", "PRESETS", "as_task_dict", "create_model", "create_task_model",
           "list_models", "model_config"]
