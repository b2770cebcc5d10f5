"""What every data set in the project shares: the ignore value, the sample layout, its description."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crossvit_mtl.tasks import IGNORE_INDEX, get_task

__all__ = ["CATEGORY_NAMES", "CATEGORY_PALETTE", "IGNORE_INDEX", "DatasetInfo"]

#: The 8 Cityscapes categories (categoryId 0..7) as the synthetic scenes and the thesis use them.
CATEGORY_NAMES = ("void", "flat", "construction", "object", "nature", "sky", "human", "vehicle")
CATEGORY_PALETTE = (
    (0, 0, 0), (128, 64, 128), (70, 70, 70), (153, 153, 153),
    (107, 142, 35), (70, 130, 180), (220, 20, 60), (0, 0, 142),
)


@dataclass(frozen=True)
class DatasetInfo:
    """Describes a data set to the engine: which tasks it provides and how to show them.

    A sample is a dict with ``image``, float32 (3, H, W) normalised by ``mean``/``std``, and one
    key per task the data set provides, each target in its task's layout
    (``crossvit_mtl.tasks``), e.g.
      ``segmentation``   uint8 (H, W), values in [0, num_classes) or IGNORE_INDEX
      ``depth``          float32 (1, H, W), metres (or disparity when ``depth_kind`` says so); 0 = invalid
      ``normal``         float32 (3, H, W), unit vectors in the camera frame; all-zero = invalid
      ``edge``           uint8 (H, W), 1 on a boundary, 0 elsewhere, IGNORE_INDEX not annotated
      ``classification`` int64 scalar

    Between loader workers and the training step, bytes cost more than arithmetic: labels stay
    uint8, and the training pipeline hands over image and normals as float16 (half the bytes;
    ``build_transforms``). ``DenseTaskModule.widen`` widens them on the device.
    """

    name: str
    tasks: tuple[str, ...]
    class_names: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    depth_kind: str = "metric"  # "metric" (metres) or "disparity" (inverse depth)
    scene_classes: tuple[str, ...] = ()  # names of the image-level classes
    #: Whether a zoomed-in crop keeps the image-level class. True for object classes (a crop of a
    #: cat is a cat); False where the class is the layout of the whole view (the synthetic
    #: scenes' road layout: a crop can cut the cross street away), and the training crop then
    #: marks the class as not annotated (IGNORE_INDEX) instead of keeping a label it may contradict.
    crop_keeps_class: bool = True
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    #: Evaluation settings the data set prescribes per task, e.g. ``{"edge": {"max_dist": 0.0075}}``
    #: (the boundary tolerance of the benchmark's SEISM F-measure, as a fraction of the diagonal).
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def as_meta(self) -> dict[str, Any]:
        """The description as plain data (what tasks read: class names, palette, depth kind ...)."""
        return {"name": self.name, "tasks": list(self.tasks), "class_names": list(self.class_names),
                "palette": [list(c) for c in self.palette], "depth_kind": self.depth_kind,
                "scene_classes": list(self.scene_classes), "crop_keeps_class": self.crop_keeps_class,
                "mean": list(self.mean), "std": list(self.std), "task_options": dict(self.task_options)}

    def task_channels(self) -> dict[str, int]:
        """Output channels per task, the `tasks=` argument of the dense models."""
        meta = self.as_meta()
        return {t: get_task(t).channels(meta) for t in self.tasks}
