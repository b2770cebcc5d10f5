"""What a finished run leaves for its user: metrics.json, a printed table, PNG plots."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from crossvit_mtl.tasks import get_task
from crossvit_mtl.viz import plots
from crossvit_mtl.viz.plots import FIT_LOG
from crossvit_mtl.viz.report import build_report


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.ndim else _plain(value.item())
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


#: per-class arrays of class tasks' metrics (segmentation, human parts)
PER_CLASS = ("iou_per_class", "acc_per_class")


def results_to_json(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Scalars as numbers, per-class arrays keyed by class name; NaN (a class never seen) as null."""
    out: dict[str, Any] = {}
    for task, values in results.items():
        entry: dict[str, Any] = {}
        for key, value in values.items():
            if key in PER_CLASS:
                entry[key] = dict(zip(get_task(task).class_names(meta), _plain(value)))
            else:
                entry[key] = _plain(value)
        out[task] = entry
    return out


def format_results(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    """A plain-text table: every task's scalar metrics, then per-class IoU and accuracy."""
    lines = []
    for task, values in results.items():
        lines.append(f"{task}")
        labels = get_task(task).metrics
        for key, value in values.items():
            if isinstance(value, float):
                shown = f"{value:.4f}" if not math.isnan(value) else "n/a"
                lines.append(f"  {labels[key].label if key in labels else key:<22} {shown}")
        if "iou_per_class" in values:
            lines.append(f"  {'class':<22} {'IoU':>7} {'acc':>7}")
            for name, iou, acc in zip(get_task(task).class_names(meta), values["iou_per_class"].tolist(),
                                      values["acc_per_class"].tolist()):
                fmt = lambda v: "    n/a" if math.isnan(v) else f"{v:7.4f}"
                lines.append(f"  {name:<22} {fmt(iou)} {fmt(acc)}")
    return "\n".join(lines)


@torch.no_grad()
def predict_samples(module: pl.LightningModule, dataset, count: int) -> tuple[list, list]:
    """The first ``count`` samples of a data set and the model's predictions on them, as numpy."""
    samples, preds = [], []
    module.eval()
    for i in range(min(count, len(dataset))):
        sample = dataset[i]
        out = module(sample["image"].unsqueeze(0).to(module.device))
        pred = {task: get_task(task).prediction(value[0].float().cpu()).numpy() for task, value in out.items()}
        samples.append({k: v.numpy() for k, v in sample.items()})
        preds.append(pred)
    return samples, preds


class RunReport(pl.Callback):
    """After fit (its last validation), after a validation outside fit and after test:
    metrics.json / metrics_test.json, the table, PNG plots. Each file names the weights it
    evaluated (``checkpoint``: a file, or null for the weights as they were, and the step they were
    trained to) and the rule that picked them (``checkpoint_selection``, the fit's; null when a
    command was handed its checkpoint)."""

    def __init__(self, num_samples: int = 6, selection: str | None = None):
        self.num_samples = num_samples
        self.selection = selection
        #: the optimiser step the last validation's weights were trained to
        self.validated_step: int | None = None
        self._loaded: dict[str, Any] = {}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._loaded = {"epoch": checkpoint.get("epoch"), "global_step": checkpoint.get("global_step")}

    def _report(self, trainer: pl.Trainer, module, stage: str) -> None:
        if not trainer.is_global_zero or stage not in module.results:
            return
        run_dir = Path(trainer.default_root_dir)
        meta = module.hparams.dataset_meta
        results = module.results[stage]
        path = run_dir / ("metrics.json" if stage == "val" else f"metrics_{stage}.json")
        loaded = trainer.ckpt_path is not None and trainer.state.fn != "fit"
        epoch, step = ((self._loaded.get("epoch"), self._loaded.get("global_step")) if loaded
                       else (trainer.current_epoch, trainer.global_step))
        payload = {"stage": stage, "epoch": epoch, "global_step": step,
                   "checkpoint": str(trainer.ckpt_path) if loaded else None, "checkpoint_selection": self.selection,
                   "model": module.hparams.model, "dataset": meta.get("name"),
                   "results": results_to_json(results, meta)}
        path.write_text(json.dumps(payload, indent=2))
        print(f"\n{stage} results (epoch {epoch}, step {step}):")
        print(format_results(results, meta))
        plot_dir = run_dir / "plots"
        plot_dir.mkdir(parents=True, exist_ok=True)
        csv_path = run_dir / FIT_LOG
        if stage != "test" and csv_path.exists():  # the curves are the fit's; a test adds nothing to them
            plots.plot_curves(csv_path, plot_dir / "curves.png")
        for task, values in results.items():
            if "confusion" in values:
                name = f"confusion_{stage}.png" if task == "segmentation" else f"confusion_{task}_{stage}.png"
                plots.plot_confusion(values["confusion"].cpu().numpy(), list(get_task(task).class_names(meta)),
                                     plot_dir / name)
        dm = getattr(trainer, "datamodule", None)
        if dm is not None and self.num_samples:
            split = dm.hparams.val_split if stage == "val" else dm.hparams.test_split
            was_training = module.training
            samples, preds = predict_samples(module, dm.dataset(split), self.num_samples)
            module.train(was_training)
            plots.plot_samples(samples, preds, meta, plot_dir / f"samples_{stage}.png")
        report = build_report(run_dir)
        print(f"run folder: {run_dir.resolve()}  (metrics: {path.name}, plots: plots/, report: {report.name})")

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            loaded = trainer.ckpt_path is not None and trainer.state.fn != "fit"
            self.validated_step = self._loaded.get("global_step") if loaded else trainer.global_step
        if trainer.state.fn == "validate":  # fit's validations are reported once, at its end
            self._report(trainer, pl_module, "val")

    def on_fit_end(self, trainer, pl_module):
        self._report(trainer, pl_module, "val")

    def on_test_end(self, trainer, pl_module):
        self._report(trainer, pl_module, "test")
