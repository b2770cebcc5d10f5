"""Whether the model asked for fits the data set the run trains on, refused before any step runs.

The config's types (``options.py``) have checked every value alone by now; what is left is what
depends on the data: class counts, output overrides that must agree with it, an image size the
model's patches tile. Each check raises ``ValueError`` with one line naming the config key and the
value, which the command line prints as it is.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crossvit_mtl.models import check_input_size, get_preset
from crossvit_mtl.tasks import get_task


def check_model_fits_data(model: str, model_options: Mapping[str, Any], dataset_meta: Mapping[str, Any]) -> None:
    """Class counts of at least 2, output overrides that agree with the data, and an image size
    the model's patches tile."""
    data_name, channels = dataset_meta.get("name"), dict(dataset_meta["task_channels"])
    for task, count in channels.items():
        try:
            get_task(task).check_channels(count)
        except ValueError as err:
            if get_task(task).out_channels is not None:
                raise ValueError(f"data set {data_name!r}: {err}") from None
            where = " (one sub-folder per class)" if str(data_name).startswith("folder:") else ""
            found = ", ".join(get_task(task).class_names(dataset_meta)) or "none"
            raise ValueError(f"data set {data_name!r} has {count} {task} class{'' if count == 1 else 'es'} ({found})"
                             f"{where}; {task} needs at least 2") from None
    options, arch = dict(model_options or {}), (get_preset(model) or {}).get("arch")
    given: dict[tuple[str, str], Any] = {}
    if "num_classes" in options and arch in ("seg", "thesis", "crossvit"):  # others refuse the option
        given = {("num_classes", "classification" if arch == "crossvit" else "segmentation"): options["num_classes"]}
    elif "tasks" in options and arch == "mtl":
        given = {(f"tasks.{t}", t): c for t, c in options["tasks"].items()}
        lacking = [t for t in channels if t not in options["tasks"]]
        if lacking:
            raise ValueError(f"model.model_options.tasks lacks {', '.join(lacking)} of data set {data_name!r} "
                             f"(its tasks: {', '.join(channels)}); leave it out: the data sets it")
    for (key, task), count in given.items():
        try:
            get_task(task).check_channels(count)
        except ValueError as err:
            if get_task(task).out_channels is not None:
                raise ValueError(f"model.model_options.{key}: {err}") from None
            raise ValueError(f"model.model_options.{key} must be an integer >= 2, got {count!r}") from None
        if task in channels and count != channels[task]:
            raise ValueError(f"model.model_options.{key} is {count!r}, but data set {data_name!r} has "
                             f"{channels[task]} for {task}; leave it out: the data sets it")
    if dataset_meta.get("image_size") and get_preset(model) is not None:
        check_input_size(model, dataset_meta["image_size"], "data image size", **options)
