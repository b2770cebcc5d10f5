"""The model zoo: ``create_model(name, **overrides)`` and ``list_models()``, timm-style."""
from __future__ import annotations

import copy
import fnmatch
import inspect
from pathlib import Path
from typing import Any

from torch import nn

from crossvit_mtl.models.crossvit import CrossViT, branch_sizes
from crossvit_mtl.models.dense import CrossViTSeg, DenseCrossViT
from crossvit_mtl.models.layers import check_divisible
from crossvit_mtl.models.presets import ALIASES, PRESETS
from crossvit_mtl.models.thesis import ThesisSegNet

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "crossvit": CrossViT, "thesis": ThesisSegNet, "seg": CrossViTSeg, "mtl": DenseCrossViT,
}


def list_models(pattern: str = "*") -> list[str]:
    """Preset names matching a shell-style pattern, in zoo order (aliases not listed)."""
    return [name for name in PRESETS if fnmatch.fnmatch(name, pattern)]


def get_preset(name: str) -> dict | None:
    """The preset a name or an alias stands for, or None."""
    return PRESETS.get(ALIASES.get(name, name))


def _arch(name: str) -> str:
    """The architecture of a preset ``model_config`` has found (it refuses unknown names)."""
    preset = get_preset(name)
    assert preset is not None
    return preset["arch"]


def _accepted_keys(cls: type) -> set[str]:
    keys: set[str] = set()
    for klass in cls.__mro__:
        if klass is nn.Module or "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        keys |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return keys - {"self"}


def model_config(name: str, **overrides) -> dict:
    """The full keyword set a preset builds with, overrides applied and checked by name."""
    preset = get_preset(name)
    if preset is None:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(PRESETS)}")
    config = copy.deepcopy(preset)
    cls = ARCHITECTURES[config.pop("arch")]
    unknown = sorted(set(overrides) - _accepted_keys(cls))
    if unknown:
        raise ValueError(f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
                         f"options: {', '.join(sorted(_accepted_keys(cls)))}")
    config.update(overrides)
    return config


def _check_tiling(name: str, sizes, patches, what: str) -> None:
    for (height, width), patch in zip(sizes, patches):
        try:
            check_divisible(int(height), int(width), int(patch), what)
        except ValueError as err:
            raise ValueError(f"{err} of model {name!r} (patch_sizes {list(patches)})") from None


def check_input_size(name: str, size, what: str = "input size", **overrides) -> None:
    """Refuse an input size (H, W) that a preset's patches cannot tile, naming the size, the patch
    size and the model. The dense models and ``thesis_seg`` feed every branch the input as it is;
    the CrossViT classifiers resize it to each branch's own size, so any input fits them."""
    config = model_config(name, **overrides)
    if _arch(name) != "crossvit":
        patches = config["patch_sizes"]
        _check_tiling(name, [size] * len(patches), patches, what)


def _check_config(name: str, config: dict, overrides: dict) -> None:
    """Values no network can be built or run with fail in one line naming the option."""
    if _arch(name) == "crossvit":
        _check_tiling(name, branch_sizes(config["img_size"]), config["patch_sizes"], "img_size")
    else:
        check_input_size(name, config["img_size"], "img_size", **overrides)
    for key in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
        if key in config and not 0 <= config[key] < 1:
            raise ValueError(f"model {name!r}: {key} must be in [0, 1), got {config[key]}")
    width_key, heads_key = ("dims", "heads") if "dims" in config else ("embed_dim", "num_heads")
    many = isinstance(config[width_key], (list, tuple))  # per branch, or one width (thesis)
    widths, heads = (list(config[k]) if many else [config[k]] for k in (width_key, heads_key))
    if any(h < 1 or w % h for w, h in zip(widths, heads)):
        raise ValueError(f"model {name!r}: {width_key} {widths if many else widths[0]} must be divisible by "
                         f"{heads_key} {heads if many else heads[0]}")


def create_model(name: str, weights: str | Path | None = None, **overrides) -> nn.Module:
    """Build a preset; ``overrides`` replace its hyper-parameters (unknown names are refused).

    ``weights``: what to fill it from (``models.pretrained.load_state``): this library's file,
    which must fit exactly, or a published CrossViT release, a file recognised by its tensor names
    or a timm name read through the Hugging Face hub cache (``crossvit_15_dagger_408.in1k``,
    ``hf-hub:timm/crossvit_15_dagger_408.in1k``), which must fill the whole encoder (a head of
    another class count stays as initialised, and the log says so).
    """
    config = model_config(name, **overrides)
    _check_config(name, config, overrides)
    model = ARCHITECTURES[_arch(name)](**config)
    # plain attributes (not parameters or modules): what save_weights records to rebuild the model
    vars(model).update(preset_name=ALIASES.get(name, name), preset_overrides=dict(overrides))
    if weights is not None:
        from crossvit_mtl.models.pretrained import load_state

        load_state(model, weights)
    return model


def create_task_model(name: str, task_channels: dict[str, int], **overrides) -> nn.Module:
    """A preset sized for a data set's tasks: class counts go to ``num_classes`` or ``tasks``.

    Single-task presets refuse task sets they cannot predict, naming both.
    """
    arch = (get_preset(name) or {}).get("arch")
    single = {"seg": "segmentation", "thesis": "segmentation", "crossvit": "classification"}
    if arch in single:
        if set(task_channels) != {single[arch]}:
            raise ValueError(f"model {name!r} predicts only {single[arch]!r}, but the tasks are "
                             f"{sorted(task_channels)}; use a crossvit_mtl_* model")
        overrides.setdefault("num_classes", task_channels[single[arch]])
    else:
        overrides.setdefault("tasks", dict(task_channels))
    return create_model(name, **overrides)


def build_for_data(name: str, options: dict[str, Any] | None, dataset_meta: dict[str, Any]) -> nn.Module:
    """The zoo network sized for a data set's description: its tasks' channels and image size."""
    options = dict(options or {})
    if (get_preset(name) or {}).get("arch") != "crossvit" and dataset_meta.get("image_size"):
        options.setdefault("img_size", tuple(dataset_meta["image_size"]))  # positions fit the data
    return create_task_model(name, dataset_meta["task_channels"], **options)


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The network of a training checkpoint and the data-set description it was trained with."""
    from crossvit_mtl.models.pretrained import load_state
    from crossvit_mtl.serialization import CheckpointError, read_checkpoint, training_state

    ckpt = read_checkpoint(path)
    hparams = ckpt.get("hyper_parameters") or {}
    meta = hparams.get("dataset_meta")
    if "state_dict" not in ckpt or not meta or "model" not in hparams:
        raise CheckpointError(f"{path}: not a crossvit-mtl training checkpoint "
                              "(needs state_dict and hyper_parameters.model/dataset_meta)")
    model = build_for_data(hparams["model"], hparams.get("model_options"), meta)
    load_state(model, training_state(ckpt), "exact", name=path)
    return model.eval(), meta


def model_from_weights(path: str | Path) -> tuple[nn.Module, dict[str, Any] | None]:
    """Rebuild an exported model from its file alone: the network and its data-set description."""
    from crossvit_mtl.models.pretrained import load_state
    from crossvit_mtl.serialization import CheckpointError, read_weights

    state, recipe = read_weights(path)
    if not recipe.get("preset"):
        raise CheckpointError(f"{path}: records no preset; use create_model(name, weights=path, **options)")
    model = create_model(recipe["preset"], **recipe.get("overrides", {}))
    load_state(model, state, "exact", name=path)
    return model.eval(), recipe.get("dataset_meta")


def as_task_dict(output) -> dict:
    """Classifiers return logits; the engine speaks of ``{task: output}`` everywhere."""
    return output if isinstance(output, dict) else {"classification": output}


__all__ = ["ALIASES", "ARCHITECTURES", "PRESETS", "as_task_dict", "build_for_data", "check_input_size",
           "create_model", "create_task_model", "get_preset", "list_models", "model_config",
           "model_from_checkpoint", "model_from_weights"]
