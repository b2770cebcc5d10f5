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

Two training protocols: MTAN / LibMTL's zoom-in crops at the stored size (``scales``), and the
multi-task benchmarks' (ATRC, InvPT, TaskPrompter on PASCAL-Context and NYUD-v2, after
mmsegmentation): the whole image rescaled by s in ``scale_range``, a random ``crop_size`` window
(``cat_max_ratio``: mmsegmentation's rule against crops of one class), flip, ``photometric``
distortion, and padding to ``crop_size``. Their evaluation pads (``pad_to``) instead of resizing:
every map is padded with a value its metric ignores, and ``collate_padded`` pads the images of a
batch to one size, so a prediction cropped back to the image is scored on the image's own pixels.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypedDict

import torch
import torch.nn.functional as F
from jsonargparse.typing import (
    ClosedUnitInterval,
    NonNegativeFloat,
    PositiveInt,
    restricted_number_type,
)
from torch.utils.data import default_collate

from crossvit_mtl.bounds import PositiveFiniteFloat
from crossvit_mtl.data.common import DatasetInfo
from crossvit_mtl.tasks import IGNORE_INDEX, get_task, is_task
from crossvit_mtl.tasks.base import Meta, Task
from crossvit_mtl.tasks.depth import DEPTH_KINDS

Sample = dict[str, torch.Tensor]

ZoomFactor = restricted_number_type("ZoomFactor", float, [(">=", 1.0), ("<", math.inf)],
                                    docstring="float restricted to be >=1 and finite")
HueShift = restricted_number_type("HueShift", float, [(">=", 0.0), ("<=", 0.5)],
                                  docstring="float restricted to [0, 0.5] (a fraction of a full turn)")
ClassShare = restricted_number_type("ClassShare", float, [(">", 0.0), ("<=", 1.0)],
                                    docstring="float restricted to (0, 1] (1: no limit)")


class TrainTransforms(TypedDict, total=False):
    """The training pipeline's settings (``data.train_transforms``), each left out taking its value
    in :data:`DEFAULT_TRAIN`.

    ``scales`` and ``flip_p`` are the MTAN / LibMTL protocol (scale s from {1, 1.2, 1.5}, crop
    H/s x W/s, resize back; flip half the time). The benchmarks' protocol: ``scale_range`` (the
    whole image rescaled by s drawn uniformly from it, low <= high), ``crop_size`` (a random window
    of that size where the image is larger, then padding to it), ``cat_max_ratio`` < 1 with
    ``cat_max_ratio_task`` (the dense task whose class map's largest class may cover at most that
    share of a crop's annotated pixels) and ``photometric`` (mmsegmentation's
    ``PhotoMetricDistortion``). ``scale_range`` replaces ``scales``' default and ``photometric``
    the jitter's; given together with them, they are refused (:func:`_benchmark_protocol`)."""

    # jsonargparse makes its restricted numbers at run time, which mypy cannot take for types
    scales: tuple[ZoomFactor, ...]  # type: ignore[valid-type]
    flip_p: ClosedUnitInterval
    brightness: NonNegativeFloat
    contrast: NonNegativeFloat
    saturation: NonNegativeFloat
    hue: HueShift  # type: ignore[valid-type]
    scale_range: tuple[PositiveFiniteFloat, PositiveFiniteFloat] | None
    crop_size: PositiveInt | tuple[PositiveInt, PositiveInt] | None
    cat_max_ratio: ClassShare  # type: ignore[valid-type]
    cat_max_ratio_task: str | None
    photometric: bool


class EvalTransforms(TypedDict, total=False):
    """The evaluation pipeline's settings (``data.eval_transforms``): ``size`` = (H, W) to resize
    to (one number: a square), or None to keep the stored resolution (the one published figures
    are computed at); ``pad_to`` = (H, W) to pad every image and map up to (larger images are kept
    whole), and ``size_divisor`` to round the padded size up to a multiple of (a model's patch
    sizes)."""

    size: PositiveInt | tuple[PositiveInt, PositiveInt] | None
    pad_to: PositiveInt | tuple[PositiveInt, PositiveInt] | None
    size_divisor: PositiveInt


#: The training pipeline's defaults: the MTAN / LibMTL protocol with colour jitter. That protocol
#: has none: set brightness, contrast and saturation to 0 to reproduce it exactly.
DEFAULT_TRAIN: TrainTransforms = {"scales": (1.0, 1.2, 1.5), "flip_p": 0.5, "brightness": 0.2, "contrast": 0.2,
                                  "saturation": 0.2, "hue": 0.0, "scale_range": None, "crop_size": None,
                                  "cat_max_ratio": 1.0, "cat_max_ratio_task": None, "photometric": False}
DEFAULT_EVAL: EvalTransforms = {"size": None, "pad_to": None, "size_divisor": 1}


# ---------------------------------------------------------------------------- value checks
# The transforms' own arguments, for their Python callers (a config's values are typed above), and
# the two settings _benchmark_protocol checks itself: the crop rule's task (tasks are plug-ins: no
# type lists them) and photometric, which no transform takes (for Python callers).

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


def _check_range(name: str, value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in value)
    if not ok or value[0] > value[1]:
        raise ValueError(f"{name} must be a (low, high) pair of positive scale factors, low <= high, got {value!r}")
    return float(value[0]), float(value[1])


def _check_ratio(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be a share in (0, 1] (1: no limit), got {value!r}")
    return float(value)


def _check_label_task(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not is_task(value) or get_task(value).kind != "dense":
        raise ValueError(f"{name} must name a dense task (the class map the crop rule counts), got {value!r}")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def _check_divisor(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


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


class RandomRescale:
    """The benchmarks' scale augmentation: the whole sample resized by s drawn uniformly from
    ``scale_range`` (to ``int(H s) x int(W s)``, as ATRC and InvPT size it), then every target told
    of the zoom (``Task.zoom``: metric depth divided by s, as the references divide it).

    The image is resampled bilinearly, antialiased when shrinking (OpenCV's ``INTER_LINEAR``, which
    the references use, is not); every map as its task says (labels, depth and normals by nearest
    neighbour as theirs, an edge map redrawn and thinned where theirs is nearest-neighbour).
    """

    def __init__(self, scale_range: Sequence[float] = (0.5, 2.0), meta: Meta | None = None):
        checked = _check_range("scale_range", scale_range)
        assert checked is not None
        self.scale_range = checked
        self.meta = _check_meta("RandomRescale", meta)

    def __call__(self, sample: Sample) -> Sample:
        size = _spatial_size(sample)
        low, high = self.scale_range
        s = low + (high - low) * float(torch.rand((), dtype=torch.float64))
        if size is None or s == 1.0:
            return sample
        H, W = size
        result = _resample(sample, 0, 0, H, W, (max(1, int(H * s)), max(1, int(W * s))))
        for key in result:
            if key != "image" and is_task(key):
                result[key] = get_task(key).zoom(result[key], s, self.meta)
        return result

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale_range={self.scale_range})"


class RandomCrop:
    """A random ``size`` window where the sample is larger (the whole extent where it is not:
    ``PadTo`` pads it afterwards), the same window for the image and every map; each target of a
    window smaller than the sample is then told of the crop as a zoom by 1 (``Task.zoom``: a class
    of the whole view may be cut away, a crop without a person's part holds no parts annotation).

    ``cat_max_ratio`` < 1 is mmsegmentation's rule, which ATRC and InvPT apply to their
    segmentation: a window whose class map ``labels`` (a task name) holds a single class, or a
    class covering ``cat_max_ratio`` or more of its annotated pixels, is drawn again, up to ten
    times; the eleventh draw is kept unchecked. A sample without that map is cropped without it.
    """

    def __init__(self, size: int | Sequence[int], cat_max_ratio: float = 1.0, labels: str | None = None,
                 meta: Meta | None = None):
        self.size = _check_size("crop size", size)
        self.meta = _check_meta("RandomCrop", meta)
        self.cat_max_ratio = _check_ratio("cat_max_ratio", cat_max_ratio)
        self.labels = _check_label_task("cat_max_ratio_task", labels)
        if self.cat_max_ratio < 1.0 and self.labels is None:
            raise ValueError("cat_max_ratio < 1 needs cat_max_ratio_task: the class map whose classes it counts")

    def _accepts(self, labels: torch.Tensor) -> bool:
        counts = torch.bincount(labels.flatten().long(), minlength=IGNORE_INDEX + 1)
        counts[IGNORE_INDEX] = 0
        counts = counts[counts > 0]
        return len(counts) > 1 and float(counts.max()) / float(counts.sum()) < self.cat_max_ratio

    def __call__(self, sample: Sample) -> Sample:
        size = _spatial_size(sample)
        if size is None:
            return sample
        H, W = size
        h, w = min(self.size[0], H), min(self.size[1], W)
        if (h, w) == (H, W):
            return sample

        def draw() -> tuple[int, int]:
            return int(torch.randint(H - h + 1, ())), int(torch.randint(W - w + 1, ()))

        top, left = draw()
        if self.cat_max_ratio < 1.0 and self.labels in sample:
            for _ in range(10):
                if self._accepts(sample[self.labels][..., top:top + h, left:left + w]):
                    break
                top, left = draw()
        spatial = {"image", *(key for key, _ in _dense_tasks(sample))}
        result = {key: value[..., top:top + h, left:left + w].contiguous() if key in spatial else value
                  for key, value in sample.items()}
        for key in result:
            if key != "image" and is_task(key):
                result[key] = get_task(key).zoom(result[key], 1.0, self.meta)
        return result

    def __repr__(self) -> str:
        rule = f", cat_max_ratio={self.cat_max_ratio}, labels={self.labels!r}" if self.cat_max_ratio < 1 else ""
        return f"{type(self).__name__}(size={self.size}{rule})"


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


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """(3, ...) RGB in [0, 1] -> HSV, hue as a fraction of a turn in [0, 1) (0 where grey)."""
    r, g, b = rgb
    value, argmax = rgb.max(0)
    chroma = value - rgb.min(0).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(argmax == 0, ((g - b) / safe) % 6,
                      torch.where(argmax == 1, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = torch.where(chroma > 0, hue / 6, torch.zeros_like(hue)) % 1.0
    saturation = torch.where(value > 0, chroma / torch.where(value > 0, value, torch.ones_like(value)),
                             torch.zeros_like(value))
    return torch.stack([hue, saturation, value])


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`rgb_to_hsv`."""
    hue, saturation, value = hsv
    sector = hue * 6
    k = torch.stack([(5 + sector) % 6, (3 + sector) % 6, (1 + sector) % 6])
    # each channel: V - V S clamp(min(k, 4 - k), 0, 1), the hexcone's piecewise-linear profile
    return value - value * saturation * torch.minimum(k, 4 - k).clamp(0, 1)


class PhotoMetricDistortion:
    """mmsegmentation's ``PhotoMetricDistortion``, as ATRC and InvPT train with it: each step with
    probability 1/2, in this order: brightness (add d, |d| <= ``brightness_delta`` / 255), contrast
    (multiply by a factor of ``contrast_range``) either here or last, saturation (HSV's S multiplied
    by a factor of ``saturation_range``), hue (HSV's H shifted by an integer k in
    [-``hue_delta``, ``hue_delta``) of OpenCV's 180 steps a turn), each result clipped to [0, 1].

    The references work on 8-bit images and truncate to integers after every step; this works on
    floats (no rounding between steps) and converts to HSV exactly rather than through OpenCV's
    8-bit HSV. Other keys are untouched.
    """

    def __init__(self, brightness_delta: float = 32, contrast_range: Sequence[float] = (0.5, 1.5),
                 saturation_range: Sequence[float] = (0.5, 1.5), hue_delta: int = 18):
        self.brightness_delta = _check_nonneg("brightness_delta", brightness_delta, upper=255)
        self.contrast_range = _check_range("contrast_range", contrast_range) or (1.0, 1.0)
        self.saturation_range = _check_range("saturation_range", saturation_range) or (1.0, 1.0)
        self.hue_delta = int(_check_nonneg("hue_delta", hue_delta, upper=90))

    @staticmethod
    def _draw(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), dtype=torch.float64))

    def _contrast(self, img: torch.Tensor) -> torch.Tensor:
        if float(torch.rand(())) < 0.5:
            img = (img * self._draw(*self.contrast_range)).clamp_(0.0, 1.0)
        return img

    def __call__(self, sample: Sample) -> Sample:
        if "image" not in sample:
            return sample
        img = sample["image"].float()
        if float(torch.rand(())) < 0.5:
            delta = self._draw(-self.brightness_delta, self.brightness_delta) / 255.0
            img = (img + delta).clamp_(0.0, 1.0)
        contrast_first = float(torch.rand(())) < 0.5
        if contrast_first:
            img = self._contrast(img)
        saturate = float(torch.rand(())) < 0.5
        factor = self._draw(*self.saturation_range) if saturate else 1.0
        shift = float(torch.rand(())) < 0.5 and self.hue_delta > 0
        turn = int(torch.randint(-self.hue_delta, self.hue_delta, ())) / 180.0 if shift else 0.0
        if saturate or shift:
            hsv = rgb_to_hsv(img)
            if saturate:
                hsv[1] = (hsv[1] * factor).clamp_(0.0, 1.0)
            if shift:
                hsv[0] = (hsv[0] + turn) % 1.0
            img = hsv_to_rgb(hsv).clamp_(0.0, 1.0)
        if not contrast_first:
            img = self._contrast(img)
        return {**sample, "image": img.to(sample["image"].dtype)}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(brightness_delta={self.brightness_delta}, contrast_range={self.contrast_range}, "
                f"saturation_range={self.saturation_range}, hue_delta={self.hue_delta})")


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


class PadTo:
    """Pad the image and every map at the bottom and right up to ``size`` (H, W) (a larger sample
    keeps its extent), rounded up to multiples of ``size_divisor``. The image is padded with 0 (it
    runs after ``Normalize``: the data set's mean colour, as ATRC and InvPT pad the normalised
    image), each map with its task's value no metric scores (``Task.pad``: 255 for class maps and
    edges, 0 for depth and normals). The image's pixels stay at the top left, where cropping the
    prediction back finds them (the references centre the image instead).
    """

    def __init__(self, size: int | Sequence[int] | None = None, size_divisor: int = 1):
        self.size = (1, 1) if size is None else _check_size("pad size", size)
        self.size_divisor = _check_divisor("size_divisor", size_divisor)

    def target(self, height: int, width: int) -> tuple[int, int]:
        """The padded size of a (height, width) sample."""
        d = self.size_divisor
        return -(-max(height, self.size[0]) // d) * d, -(-max(width, self.size[1]) // d) * d

    def __call__(self, sample: Sample) -> Sample:
        size = _spatial_size(sample)
        if size is None:
            return sample
        target = self.target(*size)
        if target == size:
            return sample
        result = dict(sample)
        for key, task in _dense_tasks(sample):
            result[key] = task.pad(sample[key], target)
        if "image" in sample:
            result["image"] = F.pad(sample["image"], (0, target[1] - size[1], 0, target[0] - size[0]), value=0.0)
        return result

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, size_divisor={self.size_divisor})"


def collate_padded(samples: list[Sample]) -> dict[str, torch.Tensor]:
    """``default_collate`` for samples of different sizes: each padded (``PadTo``) to the largest
    height and width among them first, so evaluation batches may mix image sizes."""
    sizes = [_spatial_size(s) for s in samples]
    known = [size for size in sizes if size is not None]
    if len(set(known)) > 1:
        pad = PadTo((max(h for h, _ in known), max(w for _, w in known)))
        samples = [pad(s) for s in samples]
    return default_collate(samples)


def content_size(size: tuple[int, int], config: Mapping[str, Any] | None = None) -> tuple[int, int]:
    """Where an image of ``size`` (H, W) lies in its evaluated tensor, given the evaluation
    settings ``config``: the top-left ``size`` when it is only padded, ``config["size"]`` when it
    is resized. What a prediction is cropped to before it is mapped back to the image."""
    resized = _settings(EvalTransforms, DEFAULT_EVAL, config)["size"]
    return _check_size("size", resized) if resized is not None else (int(size[0]), int(size[1]))


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

    ``train=True``: scale-crop or rescale and crop, flip, colour jitter or photometric distortion,
    normalise, pad to the crop (:class:`TrainTransforms`), image and normals handed over in float16.
    ``train=False``: optional resize, normalise, optional padding (:class:`EvalTransforms`), all
    floats float32.
    ``config``: some of the settings (the others keep their defaults); an unknown key raises
    ``TypeError``, an impossible value the transform's ``ValueError``, two settings that contradict
    each other a ``ValueError`` naming both. Steps that would do nothing (one scale of 1, p = 0, no
    jitter) are left out so they cost nothing.
    """
    meta = _check_meta(info.name, info.as_meta())
    narrow = {t: dtype for t in info.tasks if (dtype := get_task(t).transfer_dtype) is not None}
    steps: list[Callable[[Sample], Sample]] = []
    pad: PadTo | None = None
    if train:
        cfg = _benchmark_protocol(_settings(TrainTransforms, DEFAULT_TRAIN, config), config or {})
        if not cfg["scales"] or any(s != 1.0 for s in cfg["scales"]):
            steps.append(RandomScaleCrop(cfg["scales"], meta))
        if cfg["scale_range"] is not None and tuple(cfg["scale_range"]) != (1.0, 1.0):
            steps.append(RandomRescale(cfg["scale_range"], meta))
        if cfg["crop_size"] is not None:
            steps.append(RandomCrop(cfg["crop_size"], cfg["cat_max_ratio"], cfg["cat_max_ratio_task"], meta))
            pad = PadTo(cfg["crop_size"])
        if cfg["flip_p"] > 0:
            steps.append(RandomHorizontalFlip(cfg["flip_p"]))
        jitter = {k: cfg[k] for k in ("brightness", "contrast", "saturation", "hue")}
        if any(v > 0 for v in jitter.values()):
            steps.append(ColorJitter(**jitter))
        if cfg["photometric"]:
            steps.append(PhotoMetricDistortion())
    else:
        cfg = _settings(EvalTransforms, DEFAULT_EVAL, config)
        if cfg["size"] is not None:
            steps.append(Resize(cfg["size"]))
        if cfg["pad_to"] is not None or cfg["size_divisor"] != 1:
            pad = PadTo(cfg["pad_to"], cfg["size_divisor"])
    steps.append(Normalize(info.mean, info.std))
    if pad is not None:
        steps.append(pad)
    if train:
        steps.append(CastFloats({"image": torch.float16, **narrow}))
    elif narrow:
        steps.append(CastFloats(dict.fromkeys(narrow, torch.float32)))
    return Compose(steps)


def _benchmark_protocol(cfg: dict[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """What the settings' types cannot say. ``scale_range`` and ``photometric`` replace the MTAN
    zoom's and the jitter's defaults; given both ways at once, the two would compound, which no
    protocol does: refused, naming the keys. The crop rule needs a crop and a dense task's class
    map (tasks are plug-ins: no type lists them)."""
    cfg = dict(cfg)
    _check_bool("train transform config key 'photometric'", cfg["photometric"])  # no transform takes it
    _check_label_task("train transform config key 'cat_max_ratio_task'", cfg["cat_max_ratio_task"])
    if cfg["scale_range"] is not None:
        if "scales" in given and any(s != 1.0 for s in cfg["scales"]):
            raise ValueError("train transform config keys 'scales' and 'scale_range' are two scale augmentations; "
                             "give one (scales: [1.0] turns the zoom-in crops off)")
        cfg["scales"] = (1.0,)
    if cfg["photometric"]:
        jitter = [k for k in ("brightness", "contrast", "saturation", "hue") if k in given and cfg[k] > 0]
        if jitter:
            raise ValueError(f"train transform config keys 'photometric' and {jitter[0]!r} are two colour "
                             "augmentations; give one")
        cfg.update(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    if cfg["cat_max_ratio"] < 1.0 and (cfg["crop_size"] is None or cfg["cat_max_ratio_task"] is None):
        missing = "crop_size" if cfg["crop_size"] is None else "cat_max_ratio_task"
        raise ValueError(f"train transform config key 'cat_max_ratio' < 1 needs {missing!r} "
                         "(the rule redraws crops by the classes of that task's map)")
    return cfg
