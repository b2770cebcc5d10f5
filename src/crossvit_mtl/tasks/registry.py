"""The registry of tasks: every built-in task, those registered at run time, and plug-ins."""
from __future__ import annotations

from importlib.metadata import entry_points

from crossvit_mtl.tasks.base import Task
from crossvit_mtl.tasks.classification import ClassificationTask
from crossvit_mtl.tasks.depth import DepthTask
from crossvit_mtl.tasks.edge import EdgeTask
from crossvit_mtl.tasks.human_parts import HumanPartsTask
from crossvit_mtl.tasks.normal import NormalTask
from crossvit_mtl.tasks.saliency import SaliencyTask
from crossvit_mtl.tasks.segmentation import SegmentationTask

#: the entry-point group plug-in packages register tasks under
ENTRY_POINT_GROUP = "crossvit_mtl.tasks"

_REGISTRY: dict[str, Task] = {}
_plugins_loaded = False


def register_task(task: Task | type[Task], replace: bool = False) -> Task:
    """Make a task known by its ``name``; a second task of the same name is refused unless ``replace``."""
    instance = task() if isinstance(task, type) else task
    if not isinstance(instance, Task):
        raise TypeError(f"a task must be a crossvit_mtl.tasks.Task, got {type(instance).__name__}")
    name = getattr(instance, "name", None)
    if not (isinstance(name, str) and name.isidentifier()) or name == "image":
        raise ValueError(f"a task's name must be an identifier other than 'image', got {name!r}")
    if name in _REGISTRY and not replace and type(_REGISTRY[name]) is not type(instance):
        raise ValueError(f"task {name!r} is already registered ({type(_REGISTRY[name]).__name__})")
    _REGISTRY[name] = instance
    return instance


def unregister_task(name: str) -> None:
    """Forget a task (tests that register their own)."""
    _REGISTRY.pop(name, None)


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        register_task(entry.load())


def get_task(name: str) -> Task:
    """The registered task ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    if name not in _REGISTRY:
        _load_plugins()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(_REGISTRY)}") from None


def is_task(name: str) -> bool:
    try:
        get_task(name)
    except ValueError:
        return False
    return True


def task_names() -> tuple[str, ...]:
    """Every registered task, in the order tables list them."""
    _load_plugins()
    return tuple(_REGISTRY)


for _task in (SegmentationTask, HumanPartsTask, SaliencyTask, DepthTask, NormalTask, EdgeTask, ClassificationTask):
    register_task(_task)
