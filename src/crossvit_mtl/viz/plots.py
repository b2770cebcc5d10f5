"""PNG plots of a run: training curves, the confusion matrix, and sample predictions.

Drawn on ``matplotlib.figure.Figure`` objects, not pyplot: no backend is chosen and no global
figure state is touched, so importing this in a notebook changes nothing there.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from crossvit_mtl.tasks import get_task

#: the training log of a run folder (the CSV logger's `fit` version), where curves are drawn from
FIT_LOG = Path("csv") / "fit" / "metrics.csv"


def read_metrics_csv(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Lightning's CSVLogger file -> {column: [(step, value), ...]} for the non-empty cells."""
    series: dict[str, list[tuple[int, float]]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                step = int(float(row.get("step") or 0))
                for key, value in row.items():
                    if key in ("step", "epoch") or value in ("", None):
                        continue
                    series.setdefault(key, []).append((step, float(value)))
    except (UnicodeDecodeError, ValueError, TypeError, csv.Error) as err:
        raise ValueError(f"{path}: not a training log (CSV of numbers: {' '.join(str(err).split())})") from None
    return series


def plot_curves(metrics_csv: str | Path, out: str | Path) -> Path:
    """One panel per quantity: losses (train and val) and every validation metric; a test's
    figures, logged in the same file by ``fit --test_after_fit``, are not a curve."""
    series = read_metrics_csv(metrics_csv)
    series = {k: v for k, v in series.items() if not k.startswith("test/")}
    panels: dict[str, list[str]] = {"loss": sorted(k for k in series if k.endswith("loss") and "/" in k)}
    for key in sorted(series):
        if key.startswith("val/") and not key.endswith("loss"):
            panels.setdefault(key.split("/", 1)[1], []).append(key)
    panels = {k: v for k, v in panels.items() if v}
    cols = min(4, len(panels)) or 1
    rows = math.ceil(len(panels) / cols) or 1
    fig = Figure(figsize=(4 * cols, 3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels.items()):
        for key in keys:
            steps, values = zip(*series[key])
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, ms=3, label=key)
        ax.set_title(title, fontsize=9, y=1.0)  # placed, not fitted around the tick labels
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.locator_params(nbins=5)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    # Margins fixed in inches instead of tight_layout, titles placed, five ticks an axis: measuring
    # every label's extent took most of the time of a 20-panel figure (the tick labels are short
    # numbers, the titles one line)
    width, height = 4 * cols, 3 * rows
    fig.subplots_adjust(left=0.6 / width, right=1 - 0.15 / width, bottom=0.45 / height, top=1 - 0.3 / height,
                        wspace=0.25, hspace=0.45)
    fig.savefig(out, dpi=100)
    return Path(out)


def plot_confusion(confusion: np.ndarray, class_names: list[str], out: str | Path) -> Path:
    """Row-normalised confusion matrix (rows: ground truth), with the class IoUs' diagonal."""
    conf = np.asarray(confusion, dtype=np.float64)
    rows = conf.sum(1, keepdims=True)
    norm = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
    n = len(class_names)
    fig = Figure(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    ax = fig.subplots()
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return Path(out)


def sample_panels(sample: dict[str, Any], prediction: dict[str, Any], meta: dict[str, Any]) -> list[tuple[str, np.ndarray]]:
    """(title, RGB) panels for one sample: input, then ground truth and prediction per task."""
    panels = [("input", denormalize(sample["image"], meta["mean"], meta["std"]))]
    for task in meta["tasks"]:
        if task in prediction:
            panels += get_task(task).panels(np.asarray(sample[task]), np.asarray(prediction[task]), meta)
    return panels


def denormalize(image: np.ndarray, mean, std) -> np.ndarray:
    """(3, H, W) normalised image -> (H, W, 3) uint8."""
    img = np.asarray(image, dtype=np.float32).transpose(1, 2, 0) * np.asarray(std) + np.asarray(mean)
    return (img.clip(0, 1) * 255).round().astype(np.uint8)


def _image_level(task: str, sample: dict[str, Any], prediction: dict[str, Any], meta: dict[str, Any]) -> str:
    """``truth -> prediction`` of an image-level task, by class name where the data set names them."""
    names = get_task(task).class_names(meta)
    shown = [names[int(v)] if 0 <= int(v) < len(names) else "?" if int(v) == 255 else str(int(v))
             for v in (sample[task], prediction[task])]
    return " -> ".join(shown)


def plot_samples(samples: list[dict[str, Any]], predictions: list[dict[str, Any]], meta: dict[str, Any],
                 out: str | Path) -> Path:
    """A grid: one row per sample; columns input / ground truth / prediction for each task."""
    rows = [sample_panels(s, p, meta) for s, p in zip(samples, predictions)]
    cols = max(len(r) for r in rows)
    h, w = rows[0][0][1].shape[:2]
    scale = 2.2 / h * 100
    fig = Figure(figsize=(cols * w * scale / 100, len(rows) * (h * scale / 100 + 0.3)))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (row, sample, pred) in enumerate(zip(rows, samples, predictions)):
        for c, (title, image) in enumerate(row):
            ax = axes[r, c]
            ax.imshow(image)
            if c == 0:
                title = "; ".join([_image_level(task, sample, pred, meta) for task in meta["tasks"]
                                   if task in pred and get_task(task).kind == "image"]) or title
            ax.set_title(title, fontsize=7)
        for ax in axes[r]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return Path(out)
