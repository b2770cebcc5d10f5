"""Impossible values of a training config, refused before any data is read or any step runs.

jsonargparse already rejects unknown keys and wrong types; these are the values of the right type
that no run can use. Each check raises ``ValueError`` with one line naming the config key and the
value, which the command line prints as it is.
"""
from __future__ import annotations

import math
from typing import Any

from crossvit_mtl.engine.optim import OPTIMIZERS, SCHEDULERS
from crossvit_mtl.models import check_input_size, get_preset
from crossvit_mtl.tasks import get_task
from crossvit_mtl.weighting import WEIGHTINGS
from crossvit_mtl.weighting.loss_scale import LOSS_SCALINGS


def check_training_options(*, lr: float, weight_decay: float, betas, min_lr_ratio: float,
                           warmup_epochs: float, optimizer: str, scheduler: str, weighting: str,
                           loss_scaling: str, max_nonfinite_steps: int) -> None:
    """The optimiser, schedule and balancing settings of ``DenseTaskModule`` (NaN fails too)."""
    finite = math.isfinite
    for key, value, ok, need in (
            ("lr", lr, finite(lr) and lr > 0, "> 0"),
            ("weight_decay", weight_decay, finite(weight_decay) and weight_decay >= 0, ">= 0"),
            ("betas", list(betas), len(betas) == 2 and all(0 <= b < 1 for b in betas), "two values in [0, 1)"),
            ("min_lr_ratio", min_lr_ratio, 0 <= min_lr_ratio <= 1, "in [0, 1]"),
            ("warmup_epochs", warmup_epochs, finite(warmup_epochs) and warmup_epochs >= 0, ">= 0"),
            ("max_nonfinite_steps", max_nonfinite_steps, max_nonfinite_steps >= 1, ">= 1"),
            ("optimizer", optimizer, optimizer in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
            ("scheduler", scheduler, scheduler in SCHEDULERS, f"one of {', '.join(SCHEDULERS)}"),
            ("weighting", weighting, weighting in WEIGHTINGS, f"one of {', '.join(WEIGHTINGS)}"),
            ("loss_scaling", loss_scaling, loss_scaling in LOSS_SCALINGS, f"one of {', '.join(LOSS_SCALINGS)}")):
        if not ok:
            raise ValueError(f"model.{key} must be {need}, got {value!r}")


def check_model_fits_data(model: str, model_options: dict[str, Any] | None, dataset_meta: dict[str, Any]) -> None:
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
        if not isinstance(options["tasks"], dict):
            raise ValueError(f"model.model_options.tasks must map tasks to output channels, got {options['tasks']!r}")
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
