"""A run's results as one self-contained HTML file: readable in any browser, offline, mailable.

Everything is inline: the style sheet, the figures (PNG data URIs from ``RUN/plots/``), the bars
and the confusion matrix (HTML tables). A few lines of inline script only mark on ``<body>`` how
many images decoded (``data-images-loaded`` / ``data-images-broken``), for automated checks.
"""
from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any

STAGE_FILES = (("val", "metrics.json", "Validation"), ("test", "metrics_test.json", "Test"))
PER_CLASS = ("iou_per_class", "acc_per_class", "confusion")

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{padding:.2em .6em;text-align:left;font-size:.9em}
.metrics td:last-child{text-align:right;font-variant-numeric:tabular-nums}
.metrics tr:nth-child(even),.bars tr:nth-child(even){background:#f4f4f4}
.bar{background:#4a7bd0;height:.9em}.track{background:#e4e4e4;width:240px}
.conf td{text-align:center;font-size:.75em;min-width:2.6em}.conf th{font-size:.75em}
img{max-width:100%;border:1px solid #ddd}.muted{color:#777;font-size:.85em}
.tasks{display:flex;flex-wrap:wrap;gap:0 2em}
"""

CHECK_IMAGES = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (img) { return !(img.complete && img.naturalWidth > 0); });
  document.body.setAttribute("data-images-loaded", String(images.length - broken.length));
  document.body.setAttribute("data-images-broken", String(broken.length));
});
"""


def fmt(value: Any) -> str:
    """Numbers as the report and its tests show them: 4 decimals, n/a for a class never seen."""
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else escape(str(value))


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _figure(path: Path, title: str) -> str:
    return (f'<figure><img src="{png_data_uri(path)}" alt="{escape(title)}">'
            f'<figcaption class="muted">{escape(title)} ({escape(path.name)})</figcaption></figure>')


def _metric_table(task: str, values: dict[str, Any]) -> str:
    from crossvit_mtl.tasks import get_task, is_task

    labels = {k: info.label for k, info in get_task(task).metrics.items()} if is_task(task) else {}
    rows = "".join(f"<tr><td>{escape(labels.get(k, k))}</td><td>{fmt(v)}</td></tr>"
                   for k, v in values.items() if k not in PER_CLASS)
    return f'<div><h3>{escape(task)}</h3><table class="metrics">{rows}</table></div>'


def _class_bars(task: str, values: dict[str, Any]) -> str:
    acc = values.get("acc_per_class") or {}
    rows = []
    for name, iou in values["iou_per_class"].items():
        width = 0.0 if iou is None else max(0.0, min(1.0, iou)) * 100
        rows.append(f'<tr><td>{escape(name)}</td><td class="track"><div class="bar" style="width:{width:.1f}%">'
                    f'</div></td><td>{fmt(iou)}</td><td>{fmt(acc.get(name))}</td></tr>')
    return (f'<h3>{escape(task)}: IoU per class</h3><table class="bars"><tr><th>class</th><th></th><th>IoU</th>'
            f'<th>accuracy</th></tr>{"".join(rows)}</table>')


def _confusion(matrix: list[list[float]], names: list[str]) -> str:
    """Row-normalised heat map (rows: ground truth); each cell's pixel count in its tooltip."""
    head = "".join(f"<th>{escape(n)}</th>" for n in names)
    rows = []
    for name, row in zip(names, matrix):
        total = sum(row) or 1
        cells = []
        for count in row:
            share = count / total
            shade = int(255 - 180 * share)
            colour = "#fff" if share > 0.5 else "#222"
            cells.append(f'<td style="background:rgb({shade},{shade},255);color:{colour}" '
                         f'title="{int(count)} pixels">{share:.2f}</td>')
        rows.append(f"<tr><th>{escape(name)}</th>{''.join(cells)}</tr>")
    return ('<h3>Confusion matrix</h3><p class="muted">rows: ground truth, columns: prediction, '
            f'row-normalised</p><table class="conf"><tr><th></th>{head}</tr>{"".join(rows)}</table>')


def _stage_section(title: str, payload: dict[str, Any], plot_dir: Path, stage: str) -> tuple[str, set[str]]:
    results = payload.get("results", {})
    parts = [f"<h2>{escape(title)}</h2>",
             f'<p class="muted">epoch {fmt(payload.get("epoch"))}, step {fmt(payload.get("global_step"))}</p>',
             '<div class="tasks">', *(_metric_table(t, v) for t, v in results.items()), "</div>"]
    used = {f"confusion_{stage}.png"}
    for task, values in results.items():  # class tasks: segmentation, human parts
        if values.get("iou_per_class"):
            parts.append(_class_bars(task, values))
        if values.get("confusion"):
            names = [str(n) for n in values.get("iou_per_class") or range(len(values["confusion"]))]
            parts.append(_confusion(values["confusion"], names))
            used.add(f"confusion_{task}_{stage}.png")
    samples = plot_dir / f"samples_{stage}.png"
    if samples.is_file():
        parts += ["<h3>Sample predictions</h3>", _figure(samples, "input, ground truth and prediction per task")]
        used.add(samples.name)
    return "\n".join(parts), used


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` for a run folder from its metrics JSON files and ``plots/``; a
    missing run raises FileNotFoundError, a damaged file ValueError, each naming the file.

    Draws ``plots/curves.png`` from the run's training log when the run has the log but no plot.
    """
    from crossvit_mtl.comparison import read_metrics_file as read_metrics
    from crossvit_mtl.viz import plots
    from crossvit_mtl.viz.plots import FIT_LOG

    run_dir = Path(run_dir)
    stages = [(stage, read_metrics(run_dir / name), title)
              for stage, name, title in STAGE_FILES if (run_dir / name).exists()]
    if not stages:
        raise FileNotFoundError(f"{run_dir}: no metrics.json or metrics_test.json (run `fit` or `test` first)")
    plot_dir = run_dir / "plots"
    curves, csv_log = plot_dir / "curves.png", run_dir / FIT_LOG
    if not curves.is_file() and csv_log.is_file():
        plot_dir.mkdir(exist_ok=True)
        plots.plot_curves(csv_log, curves)
    first = stages[0][1]
    body = [f"<h1>{escape(str(first.get('model', 'model')))} on {escape(str(first.get('dataset', 'data')))}</h1>",
            f'<p class="muted">run folder: {escape(run_dir.resolve().name)}</p>']
    used = {curves.name}
    if curves.is_file():
        body += ["<h2>Training curves</h2>", _figure(curves, "losses and validation metrics per step")]
    for stage, payload, title in stages:
        section, seen = _stage_section(title, payload, plot_dir, stage)
        body.append(section)
        used |= seen
    others = sorted(p for p in plot_dir.glob("*.png") if p.name not in used) if plot_dir.is_dir() else []
    if others:
        body += ["<h2>Other figures</h2>", *(_figure(p, p.stem.replace("_", " ")) for p in others)]
    page = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(str(first.get('model', 'run')))} report</title><style>{STYLE}</style>"
            f"<script>{CHECK_IMAGES}</script></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")
    out = Path(out) if out else run_dir / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
