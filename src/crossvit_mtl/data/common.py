"""What every data set in the project shares: the ignore value, the sample layout, its description."""
from __future__ import annotations

from dataclasses import dataclass, field

#: The one label value that means "not annotated / do not score" everywhere in the project:
#: in caches, in tensors handed to losses and metrics, in exported class-id PNGs.
#: MTAN-format data stores -1 and the Cityscapes trainIds store 255; loaders map both here.
IGNORE_INDEX = 255

#: Task names, in the order the project lists them.
TASKS = ("segmentation", "depth", "normal", "classification")

#: The 8 Cityscapes categories (categoryId 0..7) as the synthetic scenes and the thesis use them.
CATEGORY_NAMES = ("void", "flat", "construction", "object", "nature", "sky", "human", "vehicle")
CATEGORY_PALETTE = (
    (0, 0, 0), (128, 64, 128), (70, 70, 70), (153, 153, 153),
    (107, 142, 35), (70, 130, 180), (220, 20, 60), (0, 0, 142),
)


@dataclass(frozen=True)
class DatasetInfo:
    """Describes a data set to the engine: which tasks it provides and how to show them.

    A sample is a dict with some of the keys
      ``image``          float32 (3, H, W), normalised by ``mean``/``std``
      ``segmentation``   uint8 (H, W), values in [0, num_classes) or IGNORE_INDEX
      ``depth``          float32 (1, H, W), metres (or disparity when ``depth_kind`` says so); 0 = invalid
      ``normal``         float32 (3, H, W), unit vectors in the camera frame; all-zero = invalid
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
    task_options: dict[str, dict] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def task_channels(self) -> dict[str, int]:
        """Output channels per task, the `tasks=` argument of the dense models."""
        sizes = {"segmentation": self.num_classes, "depth": 1, "normal": 3,
                 "classification": len(self.scene_classes)}
        return {t: sizes[t] for t in self.tasks}
