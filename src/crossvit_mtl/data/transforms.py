"""Augmentation that keeps every task of a sample consistent.

Each transform takes a sample dict (the layout of :class:`~crossvit_mtl.data.common.DatasetInfo`,
with ``image`` still in [0, 1] until :class:`Normalize`) and returns a new dict; keys a transform
has nothing to do with, and keys that are absent, are passed through. Random draws come from the
global ``torch`` RNG; in training each sample's draws are seeded from its own seed
(``DenseDataset.__getitem__`` with the seed ``ResumableSampler`` yields), whatever the worker.

What a transform does to a target is its task's to say (``crossvit_mtl.tasks``): how a map is
resized (nearest neighbour for labels, depth and normals, values copied bit-exactly; an edge map is
thinned again), flipped (a normal's x negated) and padded, and what a zoom-in crop does to its
values (metric depth divided by the zoom). The transforms loop over the sample's keys.

They run per sample on the CPU inside DataLoader workers, so they avoid per-pixel Python and
extra passes: colour jitter is one 3x3 colour matrix applied in a single pass.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypedDict

import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, PositiveInt, restricted_number_type

from crossvit_mtl.data.common import DatasetInfo
from crossvit_mtl.tasks import get_task, is_task
from crossvit_mtl.tasks.base import Meta, Task
from crossvit_mtl.tasks.depth import DEPTH_KINDS

Sample = dict[str, torch.Tensor]

ZoomFactor = restricted_number_type("ZoomFactor", float, [(">=", 1.0), ("<", math.inf)],
                                    docstring="float restricted to be >=1 and finite")
HueShift = restricted_number_type("HueShift", float, [(">=", 0.0), ("<=", 0.5)],
                                  docstring="float restricted to [0, 0.5] (a fraction of a full turn)")


class TrainTransforms(TypedDict, total=False):
    """The training pipeline's settings (``data.train_transforms``), each left out taking its value
    in :data:`DEFAULT_TRAIN`."""

    # jsonargparse makes its restricted numbers at run time, which mypy cannot take for types
    scales: tuple[ZoomFactor, ...]  # type: ignore[valid-type]
    flip_p: ClosedUnitInterval
    brightness: NonNegativeFloat
    contrast: NonNegativeFloat
    saturation: NonNegativeFloat
    hue: HueShift  # type: ignore[valid-type]


class EvalTransforms(TypedDict, total=False):
    """The evaluation pipeline's settings (``data.eval_transforms``): ``size`` = (H, W) to resize
    to (one number: a square), or None to keep the stored resolution (the one published figures
    are computed at)."""

    size: PositiveInt | tuple[PositiveInt, PositiveInt] | None


#: The training pipeline's defaults. ``scales`` and ``flip_p`` are the MTAN / LibMTL protocol
#: (scale s from {1, 1.2, 1.5}, crop H/s x W/s, resize back; flip half the time). That protocol has
#: no colour jitter: set brightness, contrast and saturation to 0 to reproduce it exactly.
DEFAULT_TRAIN: TrainTransforms = {"scales": (1.0, 1.2, 1.5), "flip_p": 0.5, "brightness": 0.2, "contrast": 0.2,
                                  "saturation": 0.2, "hue": 0.0}
DEFAULT_EVAL: EvalTransforms = {"size": None}


# ---------------------------------------------------------------------------- value checks
# The transforms' own arguments, for their Python callers; a config's values are typed above.

def _check_prob(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _check_nonneg(name: str, value: Any, upper: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= upper:
        bound = f"in [0, {upper}]" if math.isfinite(upper) else ">= 0"
        raise ValueError(f"{name} must be a number {bound}, got {value!r}")
    return float(value)


def _check_scales(name: str, value: Any) -> tuple[float, ...]:
    ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s >= 1.0
        for s in value)
    if not ok:
        raise ValueError(f"{name} must be a non-empty list of zoom factors >= 1, got {value!r}")
    return tuple(float(s) for s in value)


def _check_size(name: str, value: Any) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok:
        raise ValueError(f"{name} must be a positive int or an (H, W) pair of them, got {value!r}")
    return int(value[0]), int(value[1])


def _check_meta(name: str, meta: Meta | None) -> dict[str, Any]:
    """The data set's description a transform passes to its tasks; a depth kind checked now."""
    meta = dict(meta or {})
    if meta.get("depth_kind", "metric") not in DEPTH_KINDS:
        raise ValueError(f"{name} depth_kind must be one of {DEPTH_KINDS}, got {meta['depth_kind']!r}")
    return meta


# ---------------------------------------------------------------------------- helpers

def _dense_tasks(sample: Sample) -> list[tuple[str, Task]]:
    """The sample's targets that are maps moving with the image."""
    return [(key, task) for key in sample if key != "image" and is_task(key)
            for task in [get_task(key)] if task.kind == "dense"]


def _spatial_size(sample: Sample) -> tuple[int, int] | None:
    keys = (["image"] if "image" in sample else []) + [key for key, _ in _dense_tasks(sample)]
    if not keys:
        return None
    height, width = sample[keys[0]].shape[-2:]
    return int(height), int(width)


def _resample(sample: Sample, top: int, left: int, h: int, w: int, out: tuple[int, int]) -> Sample:
    """Crop every dense map to the window and resize it to ``out``; other keys pass through."""
    result = dict(sample)
    for key, task in _dense_tasks(sample):
        result[key] = task.resize(sample[key][..., top:top + h, left:left + w], out)
    if "image" in sample:
        # Channels-last takes PyTorch's vectorised bilinear kernel; converting back costs less
        # than it saves, and the later per-pixel ops and collation are fastest on (C, H, W).
        window = sample["image"][None, :, top:top + h, left:left + w].contiguous(
            memory_format=torch.channels_last)
        image = F.interpolate(window, size=out, mode="bilinear", align_corners=False,
                              antialias=h > out[0] or w > out[1])
        result["image"] = image[0].contiguous()
    return result


# ---------------------------------------------------------------------------- transforms

class Compose:
    """Apply transforms in order; each takes and returns a sample dict."""

    def __init__(self, transforms: Iterable[Callable[[Sample], Sample]]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"{type(self).__name__}([{inner}\n])"


class RandomScaleCrop:
    """MTAN / LibMTL scale augmentation: pick s, crop a random (H/s, W/s) window, resize to (H, W).

    The image is resampled bilinearly, every target as its task says (labels, depth and normals
    by nearest neighbour, so no label value is invented, invalid depth zeros stay zero and normals
    stay unit length), and then told of the zoom (``Task.zoom``): zooming in by s is read as the
    scene being s times closer, so metric depth is divided by s and disparity multiplied by it.

    Normals are left unchanged. That is exact for a camera moved along its optical axis
    (a translation does not rotate camera-frame normals); the crop is only an approximation
    of such a move, since it ignores parallax and the off-centre crop's shifted viewing rays.

    An image-level class that describes the whole view (``crop_keeps_class`` false in ``meta``) is
    not known for a crop, which may cut away what defines it: a crop marks it ``IGNORE_INDEX``, so
    the classification loss skips that sample while the dense tasks still learn from it.

    ``meta`` is the data set's description as plain data (``DatasetInfo.as_meta``): what the tasks
    need to know of it (``depth_kind``, ``crop_keeps_class``).
    """

    def __init__(self, scales: Sequence[float] = (1.0, 1.2, 1.5), meta: Meta | None = None):
        self.scales = _check_scales("scales", scales)
        self.meta = _check_meta("RandomScaleCrop", meta)

    def __call__(self, sample: Sample) -> Sample:
        size = _spatial_size(sample)
        if size is None:
            return sample
        H, W = size
        s = self.scales[int(torch.randint(len(self.scales), ()))]
        h, w = max(1, int(H / s)), max(1, int(W / s))
        top = int(torch.randint(H - h + 1, ()))
        left = int(torch.randint(W - w + 1, ()))
        if (h, w) == (H, W):
            return sample
        result = _resample(sample, top, left, h, w, (H, W))
        for key in result:
            if key != "image" and is_task(key):
                result[key] = get_task(key).zoom(result[key], s, self.meta)
        return result

    def __repr__(self) -> str:
        shown = {k: self.meta[k] for k in ("depth_kind", "crop_keeps_class") if k in self.meta}
        return f"{type(self).__name__}(scales={self.scales}, meta={shown})"


class RandomHorizontalFlip:
    """Mirror the image and every dense map with probability ``p``, each as its task says (a
    normal's x is negated: camera x points right)."""

    def __init__(self, p: float = 0.5):
        self.p = _check_prob("p", p)

    def __call__(self, sample: Sample) -> Sample:
        if float(torch.rand(())) >= self.p:
            return sample
        result = dict(sample)
        for key, task in _dense_tasks(sample):
            result[key] = task.flip(sample[key])
        if "image" in sample:
            result["image"] = sample["image"].flip(-1)
        return result

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


# Greyscale weights (ITU-R 601, as torchvision) and the RGB <-> YIQ matrices for the hue rotation.
_GRAY = torch.tensor([0.299, 0.587, 0.114])
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114],
                         [0.595716, -0.274453, -0.321263],
                         [0.211456, -0.522591, 0.311135]])
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)


class ColorJitter:
    """Random brightness, contrast, saturation and hue of the RGB image; other keys untouched.

    Factors are drawn as in torchvision (brightness/contrast/saturation from
    [max(0, 1 - v), 1 + v], hue from [-hue, hue] of a full turn) and applied in a random order.
    All four steps are linear in RGB, so they are composed into one 3x3 matrix plus offset,
    applied in a single pass and clamped to [0, 1] once. torchvision clamps after every step,
    which differs only where an intermediate step saturates. Hue is a rotation of the chroma
    plane in YIQ space, a cheap linear stand-in for torchvision's HSV hue shift.
    """

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                 hue: float = 0.0):
        self.brightness = _check_nonneg("brightness", brightness)
        self.contrast = _check_nonneg("contrast", contrast)
        self.saturation = _check_nonneg("saturation", saturation)
        self.hue = _check_nonneg("hue", hue, upper=0.5)

    def _matrix(self, channel_mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw the factors and compose the steps into ``x -> A @ x + b``."""
        u = torch.rand(4, dtype=torch.float64).tolist()
        order = torch.randperm(4).tolist()
        A, b = torch.eye(3), torch.zeros(3)
        for step in order:
            if step == 0 and self.brightness > 0:
                f = _uniform(max(0.0, 1 - self.brightness), 1 + self.brightness, u[0])
                A, b = A * f, b * f
            elif step == 1 and self.contrast > 0:
                f = _uniform(max(0.0, 1 - self.contrast), 1 + self.contrast, u[1])
                grey_mean = _GRAY @ (A @ channel_mean + b)  # mean of the current image's grey
                A, b = A * f, b * f + (1 - f) * grey_mean
            elif step == 2 and self.saturation > 0:
                f = _uniform(max(0.0, 1 - self.saturation), 1 + self.saturation, u[2])
                M = f * torch.eye(3) + (1 - f) * _GRAY.expand(3, 3)
                A, b = M @ A, M @ b
            elif step == 3 and self.hue > 0:
                angle = _uniform(-self.hue, self.hue, u[3]) * 2 * math.pi
                c, s = math.cos(angle), math.sin(angle)
                rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
                M = _YIQ2RGB @ rot @ _RGB2YIQ
                A, b = M @ A, M @ b
        return A, b

    def __call__(self, sample: Sample) -> Sample:
        if "image" not in sample or self.brightness == self.contrast == self.saturation == self.hue == 0:
            return sample
        img = sample["image"]
        flat = img.reshape(3, -1)
        channel_mean = flat.mean(dim=1).float() if self.contrast > 0 else torch.zeros(3)
        A, b = self._matrix(channel_mean)
        out = torch.addmm(b.to(img.dtype)[:, None], A.to(img.dtype), flat).clamp_(0.0, 1.0)
        return {**sample, "image": out.view_as(img)}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation}, hue={self.hue})")


def _uniform(low: float, high: float, u: float) -> float:
    return low + (high - low) * u


class Normalize:
    """``(image - mean) / std`` per channel, with the data set's statistics (not per image)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        if len(mean) != 3 or len(std) != 3 or any(not v > 0 for v in std):
            raise ValueError(f"Normalize needs 3 means and 3 positive stds, got mean={mean!r} std={std!r}")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, sample: Sample) -> Sample:
        if "image" not in sample:
            return sample
        # contiguous first: an image still in HWC memory would make this and collation slow
        return {**sample, "image": (sample["image"].contiguous() - self.mean).div_(self.std)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


class CastFloats:
    """Cast floating-point maps to given dtypes: the pipelines' last step. Training hands the image
    and the targets whose task allows it (normals) over as float16 (workers to main process: half
    the bytes, the step that limited loading); evaluation widens float16 targets from a cache back
    to the documented float32."""

    def __init__(self, dtypes: dict[str, torch.dtype]):
        self.dtypes = dict(dtypes)

    def __call__(self, sample: Sample) -> Sample:
        return {k: v.to(self.dtypes[k]) if k in self.dtypes and v.is_floating_point() else v
                for k, v in sample.items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({ {k: str(v) for k, v in self.dtypes.items()} })"


class Resize:
    """Resize the whole sample to ``size`` = (H, W): image bilinear (antialiased when shrinking),
    maps as their tasks say.

    Depth values are unchanged: resizing the whole image changes neither the distance (metric)
    nor the inverse distance (disparity) of what a pixel sees. The project treats disparity as
    inverse depth; a disparity measured in pixels of a given image width would scale with it.
    """

    def __init__(self, size: int | Sequence[int]):
        self.size = _check_size("size", size)

    def __call__(self, sample: Sample) -> Sample:
        size = _spatial_size(sample)
        if size is None or size == self.size:
            return sample
        return _resample(sample, 0, 0, size[0], size[1], self.size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


# ---------------------------------------------------------------------------- factory

def _settings(kind: type, defaults: Mapping[str, Any], config: Mapping[str, Any] | None) -> dict[str, Any]:
    """``config`` over ``defaults``; a key the settings' type does not declare is refused, as the
    config parser refuses it (a Python caller's mapping meets no parser)."""
    unknown = sorted(set(config or {}) - set(kind.__annotations__))
    if unknown:
        raise TypeError(f"{kind.__name__} has no key {unknown[0]!r} (its keys: {', '.join(kind.__annotations__)})")
    return {**defaults, **(config or {})}


def build_transforms(info: DatasetInfo, train: bool,
                     config: Mapping[str, Any] | None = None) -> Compose:
    """The pipeline a data set's samples go through.

    ``train=True``: scale-crop, flip, colour jitter, normalise (:class:`TrainTransforms`), image and
    normals handed over in float16.
    ``train=False``: optional resize, normalise (:class:`EvalTransforms`), all floats float32.
    ``config``: some of the settings (the others keep their defaults); an unknown key raises
    ``TypeError``, an impossible value the transform's ``ValueError``. Steps
    that would do nothing (one scale of 1, p = 0, no jitter) are left out so they cost nothing.
    """
    meta = _check_meta(info.name, info.as_meta())
    narrow = {t: dtype for t in info.tasks if (dtype := get_task(t).transfer_dtype) is not None}
    steps: list[Callable[[Sample], Sample]] = []
    if train:
        cfg = _settings(TrainTransforms, DEFAULT_TRAIN, config)
        if not cfg["scales"] or any(s != 1.0 for s in cfg["scales"]):
            steps.append(RandomScaleCrop(cfg["scales"], meta))
        if cfg["flip_p"] > 0:
            steps.append(RandomHorizontalFlip(cfg["flip_p"]))
        jitter = {k: cfg[k] for k in ("brightness", "contrast", "saturation", "hue")}
        if any(v > 0 for v in jitter.values()):
            steps.append(ColorJitter(**jitter))
    elif (size := _settings(EvalTransforms, DEFAULT_EVAL, config)["size"]) is not None:
        steps.append(Resize(size))
    steps.append(Normalize(info.mean, info.std))
    if train:
        steps.append(CastFloats({"image": torch.float16, **narrow}))
    elif narrow:
        steps.append(CastFloats(dict.fromkeys(narrow, torch.float32)))
    return Compose(steps)
