"""Weights into zoo models from any source, by one path: ``read_state`` turns a source into a state
dict, ``load_state`` fills a model from it and says what it did (``LoadReport``).

Sources: this library's files (safetensors from ``crossvit-mtl export``, a training checkpoint, a
state dict), the published CrossViT releases (IBM's and timm's tensor names, recognised by them),
and timm's releases on the Hugging Face hub by name (``hf-hub:timm/crossvit_15_dagger_408.in1k``,
or the name alone), read through huggingface_hub's cache.

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

import contextlib
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crossvit_mtl.models.encoders import DualBranchEncoder
from crossvit_mtl.models.layers import resize_pos_embed
from crossvit_mtl.serialization import CheckpointError, key_lists, read_weights, state_dict_of

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


#: timm's CrossViT releases (``timm/crossvit_*`` on the Hugging Face hub), each with the preset it fills
RELEASES = {f"{preset}.in1k": preset for preset in (
    "crossvit_tiny_240", "crossvit_small_240", "crossvit_base_240", "crossvit_9_240", "crossvit_9_dagger_240",
    "crossvit_15_240", "crossvit_15_dagger_240", "crossvit_15_dagger_408", "crossvit_18_240",
    "crossvit_18_dagger_240", "crossvit_18_dagger_408")}
#: how a source names a hub repository, as timm writes it: ``hf-hub:owner/name[@revision]``
HUB_PREFIX = "hf-hub:"
#: the files a timm repository holds its weights in, in the order timm reads them
HUB_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class LoadReport:
    """What a load did: model keys filled (``loaded``; ``interpolated`` among them, positions
    resized to the model's grid), model keys with no tensor in the source (``initialised``) or one
    of another shape (``mismatched``), both left as initialised, and the source's keys ``unused``."""

    loaded: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    interpolated: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not (self.initialised or self.unused or self.mismatched)

    def __str__(self) -> str:
        rest = key_lists([("interpolated", self.interpolated), ("left as initialised", self.initialised),
                          ("unused", self.unused), ("shape mismatch", self.mismatched)], counted=True)
        return "; ".join(filter(None, [f"loaded {len(self.loaded)} tensors", rest]))

    def mismatch(self) -> str:
        """In the words of a strict ``load_state_dict``: what a file of this library's names lacks,
        holds too many of or holds in another shape."""
        return key_lists([("missing", self.initialised), ("unexpected", self.unused),
                          ("shape mismatch", sorted(self.mismatched))])


def hub_repo(source: object) -> tuple[str, str | None] | None:
    """The hub repository and revision a source names (``hf-hub:owner/name[@revision]``, or a name
    of ``RELEASES``, in ``timm/``), or None: a file."""
    if not isinstance(source, str):
        return None
    if source.startswith(HUB_PREFIX):
        repo, _, revision = source[len(HUB_PREFIX):].partition("@")
        return repo, revision or None
    return (f"timm/{source}", None) if source in RELEASES else None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def hub_file(name: str) -> Path:
    """The weights file of a hub repository in huggingface_hub's cache (``HF_HUB_CACHE``, under
    ``HF_HOME``): read from the cache when it is there, with no network call (a release does not
    change); else downloaded into it (offline, ``HF_HUB_OFFLINE=1``, nothing is tried). Every
    failure is one ``CheckpointError`` naming ``name``: neither in the cache nor downloadable says
    both why."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError, OfflineModeIsEnabled

    repo, revision = hub_repo(name) or (name, None)
    unreachable = None
    try:
        for filename in HUB_FILES:
            with contextlib.suppress(LocalEntryNotFoundError):
                return Path(hf_hub_download(repo, filename, revision=revision, local_files_only=True))
        for filename in HUB_FILES:
            try:
                return Path(hf_hub_download(repo, filename, revision=revision, library_name="crossvit-mtl"))
            except LocalEntryNotFoundError as err:  # offline, or no connection: the next file would fail alike
                unreachable = err.__cause__ or err
                break
            except EntryNotFoundError:  # the repository holds no such file: the next one
                continue
    except HFValidationError as err:
        raise CheckpointError(f"{name}: not a hub repository name ({_first_line(err)})") from None
    except (OSError, ValueError) as err:  # the hub refused: no such repository or revision, gated, ...
        raise CheckpointError(f"{name}: {_first_line(err)}") from None
    if unreachable is None:
        raise CheckpointError(f"{name}: the repository holds neither {' nor '.join(HUB_FILES)}")
    why = ("offline: HF_HUB_OFFLINE is set" if isinstance(unreachable, OfflineModeIsEnabled)
           else f"no connection to the hub: {_first_line(unreachable)}")
    raise CheckpointError(f"{name}: not in the Hugging Face cache {constants.HF_HUB_CACHE} "
                          f"(neither {' nor '.join(HUB_FILES)}) and not downloaded ({why})")


def read_state(source: str | Path | Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors a source holds and the recipe recorded with them (safetensors from ``export``;
    else empty): a state dict, a file (``serialization.read_weights``) or a hub name (``hub_file``).
    A wrapped dict (``{"model": ...}``, a training checkpoint) is unwrapped, DDP's ``module.``
    dropped; what cannot be read is one ``CheckpointError`` naming the file."""
    if isinstance(source, Mapping):
        return state_dict_of(dict(source), "state dict"), {}
    if hub_repo(source) is None:
        return read_weights(source)
    path = hub_file(str(source))
    try:
        return read_weights(path)
    except CheckpointError as err:
        raise CheckpointError(f"{source}: {err}") from None


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
    encoder = model.get_submodule("encoder") if m else None
    if m and isinstance(encoder, DualBranchEncoder) and value.shape != target.shape and value.shape[-1] == target.shape[-1]:
        grid = encoder.base_grids[int(m.group(1))]
        source = _source_grid(value.shape[1] - 1, grid)
        if source:
            patches = resize_pos_embed(value[:, 1:], source, grid)
            value = torch.cat([value[:, :1], patches], dim=1)
            report.interpolated.append(f"{key} {source[0]}x{source[1]}->{grid[0]}x{grid[1]}")
    if value.shape != target.shape:
        report.mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(target.shape)}")
        return {}
    return {key: value}


#: what ``load_state`` demands before it changes anything (see there)
MODES = ("exact", "encoder", "partial")


def _encoder_source(key: str, published: bool) -> bool:
    """Whether a key of the source belongs to the encoder (the releases' classifier is norm + head)."""
    return not key.startswith(("norm.", "head.")) if published else key.startswith("encoder.")


def load_state(model: nn.Module, source: str | Path | Mapping[str, torch.Tensor], mode: str | None = None,
               name: str | Path | None = None) -> LoadReport:
    """Fill ``model`` from a source (``read_state``) and say what was loaded, interpolated, left as
    initialised and unused; the report is also logged, after ``name`` (by default the file or hub
    name, or "state dict"), which every message starts with.

    Every tensor that fits by name and shape is loaded (a release's names mapped); learned
    positions of another grid are interpolated to the model's. ``mode`` says what must hold, else
    one ``CheckpointError`` names the source and the keys before anything changes:

    - ``"exact"``: every tensor of the model filled and every tensor of the source used;
    - ``"encoder"``: the model's whole encoder filled and none of the source's encoder tensors
      unused; heads and decoder load where they fit (another class count, a dense model started
      from a classifier);
    - ``"partial"`` (``model.pretrained``): at least one encoder tensor loaded, none of the
      encoder of another shape;
    - None (``create_model(weights=...)``): ``"encoder"`` for a release, else ``"exact"``.
    """
    if mode is not None and mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    label = str(name or ("state dict" if isinstance(source, Mapping) else source))
    state, _ = read_state(source)
    published = is_published(state)
    mode = mode or ("encoder" if published else "exact")
    if published:
        converted, sources, unused = convert_published(state, _head_prefix(model))
    else:
        converted, sources, unused = dict(state), {k: [k] for k in state}, []
    own = model.state_dict()
    report = LoadReport(unused=list(unused))
    fitted: dict[str, torch.Tensor] = {}
    for key, value in converted.items():
        got = _fit(key, value, own, model, report)
        if got is None:
            report.unused += sources[key]
        fitted.update(got or {})
    report.loaded = sorted(fitted)
    left = set(own) - set(fitted) - {entry.split(" ", 1)[0] for entry in report.mismatched}
    report.initialised = sorted(k for k in left if not k.endswith("num_batches_tracked"))
    report.unused = sorted(set(report.unused))
    encoder_mismatch = [e for e in report.mismatched if e.startswith("encoder.")]
    problem = {
        "exact": not report.complete,
        "encoder": bool(encoder_mismatch or [k for k in report.initialised if k.startswith("encoder.")]
                        or [k for k in report.unused if _encoder_source(k, published)]),
        "partial": bool(encoder_mismatch) or not any(k.startswith("encoder.") for k in fitted),
    }[mode]
    if problem:  # an exact load of this library's names says what differs, as torch's strict load; else what fits
        detail = (f"the model; {report.mismatch()}" if mode == "exact" and not published
                  else f"{getattr(model, 'preset_name', type(model).__name__)}: {report}")
        raise CheckpointError(f"{label}: weights do not fit {detail}")
    model.load_state_dict(fitted, strict=False)
    log.info("%s: %s", label, report)
    return report
