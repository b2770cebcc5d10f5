"""What a task is to the project: one class that holds everything the data pipeline, the models,
the engine, the plots, ``predict`` and the comparisons need to know of it.

A task is a subclass of :class:`Task` registered by name (``crossvit_mtl.tasks.register_task``, or
the ``crossvit_mtl.tasks`` entry-point group for a plug-in package). Everything else loops over the
registry, so adding a task is one module. Its parts, in the order a sample meets them:

* data: the target's stored dtype and per-pixel shape (``storage``), how a raw array becomes a
  tensor, how a map is resized, flipped and padded, what a zoom-in crop does to its values, which
  values are impossible (cache writer, ``data check``);
* model: output channels for a data set, the output constraint (``finalize``), a starting bias for
  the head from the data (a detector's prior);
* losses by name, the metric (a torchmetrics ``Metric`` with summed states), the metric keys with
  their direction and label, the primary metric and the metrics Delta-m averages;
* pictures: panels for the plots and the files ``predict`` writes.

Tasks live below the data layer (``data`` imports them, never the reverse), so this module speaks
of a data set only through its description as plain data (``meta``: the dict the data module
hands the engine, with ``class_names``, ``palette``, ``scene_classes``, ``depth_kind``,
``crop_keeps_class`` and ``task_options``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

#: The one label value that means "not annotated / do not score" everywhere in the project: in
#: caches, in tensors handed to losses and metrics, in exported class-id PNGs, in every uint8 map
#: (labels, parts, edges, saliency). MTAN-format data stores -1 and the Cityscapes trainIds store
#: 255; loaders map both here.
IGNORE_INDEX = 255

Meta = Mapping[str, Any]


@dataclass(frozen=True)
class MetricInfo:
    """How comparisons and reports treat one scalar metric of a task."""

    higher_is_better: bool
    label: str


@dataclass(frozen=True)
class Storage:
    """How a target is stored in the project's cache and handed between loader workers:
    ``dtype`` of the stored array, ``trailing`` per-pixel shape (``()`` for a map, ``(3,)`` for a
    vector field), or None for one value per image; ``file`` its name in a cache split."""

    file: str
    dtype: Any
    trailing: tuple[int, ...] | None


class TargetError(ValueError):
    """Targets a task cannot have reached a loss: the data holds values its task does not."""


class Task:
    """Base of every task: override what differs. Subclasses set the class attributes and
    implement ``build_metric``; the defaults describe a dense map of class ids (segmentation)."""

    #: the sample key and the name configs use
    name: ClassVar[str]
    #: "dense": a (C, H, W) map per image, resampled with the image; "image": one (C,) vector
    kind: ClassVar[str] = "dense"
    storage: ClassVar[Storage]
    #: fixed output channels, or None when the data set decides (class counts)
    out_channels: ClassVar[int | None] = None
    #: losses by name and the default one
    losses: ClassVar[Mapping[str, type[nn.Module]]] = {}
    default_loss: ClassVar[str]
    #: scalar metric key -> direction and label
    metrics: ClassVar[dict[str, MetricInfo]] = {}
    #: the metric that picks checkpoints and the condensed tables' column
    primary_metric: ClassVar[str]
    #: the primary metric as validation computes it, where it is a cheaper variant (edges)
    val_primary_metric: ClassVar[str | None] = None
    #: the metrics Delta-m averages over by default (MTAN / LibMTL / Nash-MTL's choice)
    delta_metrics: ClassVar[tuple[str, ...]] = ()
    #: the one metric per task of MTI-Net's Delta-m (Vandenhende et al. 2021)
    single_delta_metric: ClassVar[str | None] = None
    #: a map of class ids: resampled by nearest neighbour, padded with IGNORE_INDEX
    pad_value: ClassVar[float] = IGNORE_INDEX
    #: the dtype a training sample hands over between workers and the step, when narrower
    transfer_dtype: ClassVar[torch.dtype | None] = None

    # ------------------------------------------------------------------ data
    def to_tensor(self, value: Any) -> Tensor:
        """A raw array as ``DenseDataset.load`` returns it -> the tensor a sample holds. Maps of
        class ids stay uint8 until the batch reaches the device (an eighth of an int64's bytes)."""
        if self.kind == "image":
            return torch.tensor(int(value), dtype=torch.int64)
        arr = np.asarray(value)
        if self.storage.trailing:
            dtype = arr.dtype if arr.dtype == self.storage.dtype else np.float32
            return torch.from_numpy(np.ascontiguousarray(arr, dtype=dtype)).permute(2, 0, 1).contiguous()
        if np.issubdtype(self.storage.dtype, np.integer):
            return torch.from_numpy(arr.astype(self.storage.dtype, copy=False))
        return torch.from_numpy(np.asarray(arr, dtype=np.float32)).unsqueeze(0)

    def resize(self, value: Tensor, size: tuple[int, int]) -> Tensor:
        """A (H, W) or (C, H, W) map at ``size``; nearest neighbour by default: interpolating would
        invent label values, blend valid depth with the invalid zeros and shorten unit normals."""
        return nearest(value, size)

    def flip(self, value: Tensor) -> Tensor:
        """The map mirrored left-right (a new tensor)."""
        return value.flip(-1)

    def zoom(self, value: Tensor, scale: float, meta: Meta) -> Tensor:
        """The target of a view zoomed by ``scale``: a crop resized back (``scale`` >= 1), the whole
        image rescaled, a plain crop (1); values unchanged unless the task says otherwise (depth,
        an image-level class a crop may cut away, parts a crop may cut away)."""
        return value

    def pad(self, value: Tensor, size: tuple[int, int]) -> Tensor:
        """The map padded at the bottom and right to ``size`` with a value no metric scores."""
        height, width = value.shape[-2:]
        return F.pad(value, (0, size[1] - width, 0, size[0] - height), value=self.pad_value)

    def bad_values(self, array: np.ndarray, meta: Meta) -> tuple[np.ndarray, str]:
        """Per sample of a stacked (N, ...) array: whether it holds a value this task cannot have,
        and what such values are called (``data check``, the cache writer)."""
        classes = len(self.class_names(meta))
        bad = ((array < 0) | (array >= classes)) & (array != IGNORE_INDEX)
        return bad.reshape(len(array), -1).any(1), f"values outside 0..{classes - 1} and {IGNORE_INDEX}"

    # ------------------------------------------------------------------ model
    def class_names(self, meta: Meta) -> tuple[str, ...]:
        """The classes of a class task (empty for the others)."""
        return ()

    def channels(self, meta: Meta) -> int:
        """Output channels of the task's head for a data set: what a run's description says
        (``task_channels``), else fixed by the task, else its class count."""
        given = (meta.get("task_channels") or {}).get(self.name)
        if given is not None:
            return int(given)
        return self.out_channels if self.out_channels is not None else len(self.class_names(meta))

    def check_channels(self, channels: Any) -> None:
        """Refuse an output channel count this task cannot predict with, in one line."""
        if self.out_channels is not None:
            if channels != self.out_channels:
                raise ValueError(f"task {self.name!r} has {self.out_channels} output channel"
                                 f"{'s' if self.out_channels > 1 else ''}, got {channels!r}")
        elif not (isinstance(channels, int) and not isinstance(channels, bool) and channels >= 2):
            raise ValueError(f"task {self.name!r} needs at least 2 classes, got {channels!r}")

    def finalize(self, output: Tensor) -> Tensor:
        """The network's output constraint, applied after upsampling (logits stay logits)."""
        return output

    def initial_bias(self, target: Tensor) -> tuple[float, str] | None:
        """A starting bias for the head's last layer from a calibration batch's targets, and the
        sentence that reports it; None leaves the head as initialised."""
        return None

    # ------------------------------------------------------------------ losses and metrics
    def build_loss(self, name: str | None = None, **options: Any) -> nn.Module:
        """The loss ``name`` (the default when None); ``options`` go to its constructor."""
        name = self.default_loss if name is None else name
        if name not in self.losses:
            raise ValueError(f"unknown {self.name} loss {name!r}; choose from {sorted(self.losses)}")
        return self.losses[name](**options)

    def build_metric(self, meta: Meta, stage: str = "test") -> Metric:  # pragma: no cover - every task defines it
        """The summed-state metric of an evaluation ``stage`` ("val" or "test")."""
        raise NotImplementedError

    def options(self, meta: Meta) -> dict[str, Any]:
        """What the data set prescribes for this task's evaluation (``task_options``)."""
        return dict((meta.get("task_options") or {}).get(self.name) or {})

    def widen(self, value: Tensor) -> Tensor:
        """A batch's target as losses and metrics take it, on the device: class ids as int64,
        floats as float32."""
        if value.dtype == torch.uint8:
            return value.long()
        return value.float() if value.dtype == torch.float16 else value

    def example_target(self, channels: int, batch: int, size: tuple[int, int], generator: torch.Generator) -> Tensor:
        """A random target batch in the layout losses take (benchmarks measure steps on it)."""
        shape = (batch,) if self.kind == "image" else (batch, *size)
        return torch.randint(channels, shape, generator=generator)

    # ------------------------------------------------------------------ pictures and files
    def prediction(self, output: Tensor) -> Tensor:
        """One image's output (C, H, W) or (C,) -> the prediction in the target's form (CPU)."""
        return output.argmax(0)

    def colorize(self, value: np.ndarray, meta: Meta, reference: np.ndarray | None = None) -> np.ndarray:
        """A target or prediction map -> (H, W, 3) uint8; ``reference`` is the target when a
        prediction is drawn beside it (shared scales)."""
        return colorize_labels(value, self.palette(meta))

    def palette(self, meta: Meta) -> list[tuple[int, int, int]]:
        return [tuple(c) for c in meta.get("palette") or default_palette(len(self.class_names(meta)))]

    def panels(self, target: np.ndarray, prediction: np.ndarray, meta: Meta) -> list[tuple[str, np.ndarray]]:
        """(title, RGB) panels of one sample: ground truth, then prediction."""
        if self.kind == "image":
            return []
        return [(self.name, self.colorize(target, meta)),
                (f"{self.name} pred", self.colorize(prediction, meta, reference=target))]

    def write_prediction(self, stem: str, output: Tensor, image: np.ndarray, meta: Meta,
                         out_dir: Path) -> dict[str, Any]:
        """The files ``predict`` writes for one image's output; returns what goes into
        ``predictions.json`` for it."""
        from PIL import Image

        value = self.prediction(output.float()).numpy()
        Image.fromarray(self.colorize(value, meta)).save(out_dir / f"{stem}_{self.name}.png")
        return {}

    def after_resample(self, value: Tensor) -> Tensor:
        """A dense output after bilinear resizing or averaging of windows (normals: unit again)."""
        return value


# ---------------------------------------------------------------------------- shared helpers

def nearest(value: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of a (H, W) or (C, H, W) map; values are copied, never mixed.

    ``nearest-exact`` samples pixel centres, the geometry of bilinear with ``align_corners=False``,
    so the maps stay aligned with the image. Integer maps other than uint8 go through float32,
    exact for the label values used here (< 2**24).
    """
    if tuple(value.shape[-2:]) == tuple(size):
        return value.clone()
    batch = value[None] if value.dim() == 3 else value[None, None]
    if not (batch.is_floating_point() or batch.dtype == torch.uint8):
        batch = batch.float()
    return F.interpolate(batch, size=size, mode="nearest-exact").to(value.dtype).view(*value.shape[:-2], *size)


def check_class_targets(target: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
    """Refuse class ids outside ``[0, num_classes)`` other than ``ignore_index``, naming one:
    ``F.cross_entropy`` would fail deep inside (IndexError on CPU, a device assert on CUDA)."""
    bad = ((target < 0) | (target >= num_classes)) & (target != ignore_index)
    if bad.any():
        raise TargetError(f"a batch's targets hold class {int(target[bad][0])}, outside 0..{num_classes - 1} and "
                          f"the ignore index {ignore_index}; `crossvit-mtl data check` lists the files")


def colorize_labels(labels: np.ndarray, palette) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 in the data set's palette; ignored pixels black."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(palette)] = np.asarray(palette, dtype=np.uint8)[:255]
    table[IGNORE_INDEX] = 0
    return table[np.asarray(labels).astype(np.int64).clip(0, 255)]


def colorize_scalar(values: np.ndarray, vmax: float | None = None, cmap: str = "magma_r",
                    valid: np.ndarray | None = None) -> np.ndarray:
    """(H, W) non-negative values -> (H, W, 3) uint8 with a perceptual colour map, scaled to
    ``vmax`` (the 99th percentile of the valid values when None); invalid pixels black."""
    from matplotlib import colormaps

    values = np.asarray(values, dtype=np.float32)
    valid = np.ones(values.shape, bool) if valid is None else valid
    if vmax is None:
        vmax = float(np.percentile(values[valid], 99)) if valid.any() else 1.0
    rgb = (colormaps[cmap](np.clip(values / max(vmax, 1e-6), 0, 1))[..., :3] * 255).astype(np.uint8)
    rgb[~valid] = 0
    return rgb


def default_palette(count: int) -> list[tuple[int, int, int]]:
    """Distinct colours for ``count`` classes where a data set names none (the PASCAL VOC rule:
    the bits of the class id spread over the three channels)."""
    colours = []
    for index in range(count):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours.append((r, g, b))
    return colours
