"""The types of the training config's values: jsonargparse checks them while it reads the config,
so an unknown key or an impossible value fails in one line naming it, before anything is built.

Restricted numbers are jsonargparse's (``jsonargparse.typing``); the nested mappings are
TypedDicts, which stay plain dicts in hyper-parameters and checkpoints. What a type cannot say is
left to the one place that knows: which preset takes which option (``models.model_config``), which
loss takes which keyword (the loss class's signature), whether the model fits the data
(``fit_checks``).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypedDict

from jsonargparse.typing import restricted_number_type

#: Adam's beta_1 and beta_2
Beta = restricted_number_type("Beta", float, [(">=", 0.0), ("<", 1.0)], docstring="float restricted to [0, 1)")

OptimizerName = Literal["adam", "adamw", "sgd"]
SchedulerName = Literal["none", "cosine"]
#: ``initial`` divides each task's loss by its value for the untrained network; ``none`` does not
LossScaling = Literal["initial", "none"]

#: ``model.losses.<task>``: ``name`` (the task's loss, ``Task.default_loss`` when left out), ``weight``
#: (a fixed factor >= 0, 1 when left out) and the loss's own keyword arguments, which its signature checks
LossSpec = dict[str, Any]


class ModelOptions(TypedDict, total=False):
    """``model.model_options``: overrides of a preset's hyper-parameters, every option some
    architecture takes (``crossvit-mtl models`` lists the presets). Which architecture takes which,
    and the values no network can be built with, is the model zoo's to say."""

    num_classes: int
    tasks: dict[str, int]
    img_size: int | list[int]
    patch_sizes: list[int]
    dims: list[int]
    heads: list[int]
    stages: list[list[int]]
    mlp_ratios: list[float]
    fusion: Literal["cls", "tokens"]
    stem: Literal["linear", "conv", "multi_conv"]
    kv_pool: list[int]
    kv_tokens: int | None
    decoder_channels: int
    decoder_stages: int
    detail_channels: int
    detail_depth: int
    in_chans: int
    qkv_bias: bool
    drop_rate: float
    attn_drop_rate: float
    drop_path_rate: float
    task_interaction: Literal["none", "cross_attention"]
    classifier: Literal["map", "cls"]
    separable_heads: bool
    refine_heads: bool
    # the thesis network (thesis_seg)
    embed_dim: int
    num_heads: int
    depth: int
    cross_depth: int
    mlp_ratio: float
    stem_channels: int


def plain(value: Any) -> Any:
    """``value`` as the plain data a ``weights_only`` checkpoint load reads back: jsonargparse's
    restricted numbers as ``float`` / ``int``.

    Hyper-parameters are saved in every checkpoint; a module built by jsonargparse outside the
    command line (``load_from_checkpoint`` of a command-line checkpoint) receives typed values."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(plain(v) for v in value)
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value
