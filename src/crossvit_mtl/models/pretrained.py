"""Published CrossViT ImageNet weights (IBM's release and timm's ``crossvit_*``) into zoo models.

Both releases name tensors the same way except for the CLS tokens and positions (IBM:
``cls_token.0``, timm: ``cls_token_0``). The mapping to this library's names:

========================================================  ==========================================
published                                                 here (``encoder.`` prefix)
========================================================  ==========================================
``patch_embed.{b}.proj[.{0,2,4}].*``                      ``patch_embed.{b}.proj[.{0,2,4}].*``
``cls_token_{b}``, ``pos_embed_{b}``                      ``cls_token.{b}``, ``pos_embed.{b}`` (resized)
``blocks.{s}.blocks.{b}.{k}.*``                           ``stages.{s}.blocks.{b}.{k}.*``
``blocks.{s}.projs|revert_projs.{b}.{0,2}.*``             ``stages.{s}.fusion.projs|revert_projs...``
``blocks.{s}.fusion.{b}[.{k}].norm1.*``                   ``...fusion.fusion.{b}.{k}.norm_q`` and ``norm_kv``
``blocks.{s}.fusion.{b}[.{k}].attn.wq.*``                 ``...attn.q.*``
``blocks.{s}.fusion.{b}[.{k}].attn.wk.*`` + ``wv``        ``...attn.kv.*`` (k rows, then v rows)
``norm.{b}.*``, ``head.{b}.*``                            classification head ``norms.{b}``, ``heads.{b}``
========================================================  ==========================================

A fused ``qkv`` also fills pooled attention's ``q`` and ``kv`` (dense models with ``kv_pool``).
The releases' LayerNorms use eps 1e-6, as the project's layers do.
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from crossvit_mtl.models.layers import resize_pos_embed
from crossvit_mtl.serialization import CheckpointError, load_state_strict, read_checkpoint, read_weights

log = logging.getLogger(__name__)


_FUSION = re.compile(r"^blocks\.(\d+)\.fusion\.(\d+)\.(?:(\d+)\.)?(norm1|attn\.w[qkv]|attn\.proj)\.(weight|bias)$")
_RULES = [
    (re.compile(r"^(cls_token|pos_embed)[._](\d+)$"), r"encoder.\1.\2"),
    (re.compile(r"^patch_embed\.(.+)$"), r"encoder.patch_embed.\1"),
    (re.compile(r"^blocks\.(\d+)\.blocks\.(.+)$"), r"encoder.stages.\1.blocks.\2"),
    (re.compile(r"^blocks\.(\d+)\.(projs|revert_projs)\.(.+)$"), r"encoder.stages.\1.fusion.\2.\3"),
    (re.compile(r"^norm\.(\d+)\.(.+)$"), r"{head}norms.\1.\2"),
    (re.compile(r"^head\.(\d+)\.(.+)$"), r"{head}heads.\1.\2"),
]


class PretrainedError(ValueError):
    """Weights that do not fit the model as asked; names the keys."""


@dataclass
class LoadReport:
    """What a load did: model keys filled (``loaded``; ``resized`` among them, positions
    interpolated to the model's grid), model keys with no tensor in the file (``missing``) or one
    of another shape (``mismatched``), both left as initialised, and the file's keys unused."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors"]
        for label, items in (("interpolated", self.resized), ("left as initialised", self.missing),
                             ("unused", self.unexpected), ("shape mismatch", self.mismatched)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{label} {len(items)}: {', '.join(items[:5])}{more}")
        return "; ".join(parts)


def read_published(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A published state dict from a file (safetensors, or torch.load with weights_only) or a
    mapping; unwraps ``{"model": ...}``/``{"state_dict": ...}`` and DDP's ``module.`` prefix."""
    if isinstance(source, Mapping):
        state = dict(source)
    elif Path(source).suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(source))
    else:
        state = read_checkpoint(source)
    for key in ("model", "state_dict", "model_ema"):
        if isinstance(state.get(key), Mapping):
            state = dict(state[key])
            break
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def is_published(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict names its tensors as the IBM or timm CrossViT releases do."""
    return "patch_embed.0.proj.weight" in state or "patch_embed.0.proj.0.weight" in state


def _head_prefix(model: nn.Module) -> str:
    heads = getattr(model, "heads", None)
    return "heads.classification." if isinstance(heads, nn.ModuleDict) else "head."


def convert_published(state: Mapping[str, torch.Tensor], head_prefix: str = "head.") -> tuple[
        dict[str, torch.Tensor], dict[str, list[str]], list[str]]:
    """Published names -> this library's: (tensors, the published keys behind each, unused keys)."""
    out: dict[str, torch.Tensor] = {}
    sources: dict[str, list[str]] = {}
    unused: list[str] = []
    kv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = _FUSION.match(key)
        if m:
            stage, branch, depth, part, kind = m.groups()
            base = f"encoder.stages.{stage}.fusion.fusion.{branch}.{depth or 0}."
            if part == "norm1":
                targets = [f"{base}norm_q.{kind}", f"{base}norm_kv.{kind}"]
            elif part in ("attn.wk", "attn.wv"):
                kv.setdefault(f"{base}attn.kv.{kind}", {})[part[-1]] = value
                sources.setdefault(f"{base}attn.kv.{kind}", []).append(key)
                continue
            else:
                targets = [base + {"attn.wq": "attn.q", "attn.proj": "attn.proj"}[part] + f".{kind}"]
            for t in targets:
                out[t] = value
                sources[t] = [key]
            continue
        for pattern, template in _RULES:
            if pattern.match(key):
                target = pattern.sub(template.replace("{head}", head_prefix), key)
                out[target] = value
                sources[target] = [key]
                break
        else:
            unused.append(key)
    for target, parts in kv.items():
        if set(parts) == {"k", "v"}:
            out[target] = torch.cat([parts["k"], parts["v"]], dim=0)
        else:
            unused += sources.pop(target)
    return out, sources, unused


def _source_grid(count: int, grid: tuple[int, int]) -> tuple[int, int] | None:
    """The grid ``count`` positions were learned on: square (the releases), or of the model's
    aspect ratio (this library's weights from another image size); None if neither."""
    side = math.isqrt(count)
    if side * side == count:
        return side, side
    height = round(math.sqrt(count * grid[0] / grid[1]))
    width = count // max(height, 1)
    return (height, width) if height * width == count and height * grid[1] == width * grid[0] else None


def _fit(key: str, value: torch.Tensor, own: dict[str, torch.Tensor], model: nn.Module,
         report: LoadReport) -> dict[str, torch.Tensor] | None:
    """The tensor(s) to load for one converted key, adapted to the model, or None if none fit."""
    if key not in own and key.endswith(("attn.qkv.weight", "attn.qkv.bias")):
        base, kind = key.rsplit(".qkv.", 1)
        q, kv = f"{base}.q.{kind}", f"{base}.kv.{kind}"
        if q in own and kv in own and value.shape[0] == own[q].shape[0] + own[kv].shape[0]:
            return {q: value[: own[q].shape[0]], kv: value[own[q].shape[0]:]}
        return None
    if key not in own:
        return None
    target = own[key]
    m = re.match(r"^encoder\.pos_embed\.(\d+)$", key)
    if m and value.shape != target.shape and value.shape[-1] == target.shape[-1]:
        grid = tuple(model.encoder.base_grids[int(m.group(1))])
        source = _source_grid(value.shape[1] - 1, grid)
        if source:
            patches = resize_pos_embed(value[:, 1:], source, grid)
            value = torch.cat([value[:, :1], patches], dim=1)
            report.resized.append(f"{key} {source[0]}x{source[1]}->{grid[0]}x{grid[1]}")
    if value.shape != target.shape:
        report.mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(target.shape)}")
        return {}
    return {key: value}


#: what ``load_state`` demands before it changes anything
REQUIRE = ("all", "encoder", "some")


def _encoder_source(key: str, published: bool) -> bool:
    """Whether a key of the file belongs to the encoder (the releases' classifier is norm + head)."""
    return not key.startswith(("norm.", "head.")) if published else key.startswith("encoder.")


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], require: str = "all") -> LoadReport:
    """Fill ``model`` from a state dict in the releases' names or this library's; returns what
    was loaded, interpolated, left as initialised and unused.

    Every tensor that fits by name and shape is loaded; learned positions of another grid are
    interpolated to the model's. ``require`` says what must hold, else :class:`PretrainedError`
    names the keys before anything is changed: ``"all"``, every tensor of the model and of the
    file used; ``"encoder"``, the whole encoder filled from the file and none of the file's
    encoder tensors unused (heads and decoders may stay as initialised: another class count, a
    dense model started from a classifier); ``"some"``, at least one encoder tensor loaded and
    none of another shape.
    """
    if require not in REQUIRE:
        raise ValueError(f"require must be one of {', '.join(REQUIRE)}, got {require!r}")
    published = is_published(state)
    if published:
        converted, sources, unused = convert_published(state, _head_prefix(model))
    else:
        converted, sources, unused = dict(state), {k: [k] for k in state}, []
    own = model.state_dict()
    report = LoadReport(unexpected=list(unused))
    fitted: dict[str, torch.Tensor] = {}
    for key, value in converted.items():
        got = _fit(key, value, own, model, report)
        if got is None:
            report.unexpected += sources[key]
        fitted.update(got or {})
    report.loaded = sorted(fitted)
    left = set(own) - set(fitted) - {entry.split(" ", 1)[0] for entry in report.mismatched}
    report.missing = sorted(k for k in left if not k.endswith("num_batches_tracked"))
    report.unexpected = sorted(set(report.unexpected))
    encoder_mismatch = [e for e in report.mismatched if e.startswith("encoder.")]
    problem = {
        "all": not report.complete,
        "encoder": bool(encoder_mismatch or [k for k in report.missing if k.startswith("encoder.")]
                        or [k for k in report.unexpected if _encoder_source(k, published)]),
        "some": bool(encoder_mismatch) or not any(k.startswith("encoder.") for k in fitted),
    }[require]
    if problem:
        raise PretrainedError(f"weights do not fit {getattr(model, 'preset_name', type(model).__name__)}: {report}")
    model.load_state_dict(fitted, strict=False)
    return report


def load_crossvit_pretrained(model: nn.Module, source: str | Path | Mapping[str, torch.Tensor],
                             strict: bool = True) -> LoadReport:
    """Load IBM/timm CrossViT weights (a file or a state dict) into a zoo model: ``load_state``
    requiring ``"all"`` (``strict``, for the ``crossvit_*`` classifiers) or ``"some"``.

    A dense model built with the classifier's ``dims``, ``heads``, ``stages``, ``mlp_ratios``,
    ``patch_sizes=(12, 16)`` and ``fusion="cls"`` takes the whole encoder, positions
    interpolated to its grid; its decoder and heads stay as initialised.
    """
    return load_state(model, read_published(source), "all" if strict else "some")


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
