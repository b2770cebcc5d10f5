"""The figures the multi-task papers publish on PASCAL-Context and NYUD-v2, as data, each with its
source, for ``crossvit-mtl compare --published`` and docs/benchmarks.md.

Values are in the project's units, as its metrics files hold them: mIoU, maxF and odsF as fractions
(the papers print percent: 79.03 is 0.7903), depth RMSE in metres, normals' mean angle in degrees.
The papers score every task on val (the benchmarks have no public test labels); PASCAL-Context's
edges on SEISM's 2498-image subset of it (``val_edge``), NYUD-v2's on all 654 val images.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PublishedResult:
    """One method's published row on one benchmark."""

    method: str
    backbone: str
    schedule: str
    #: task -> metric key -> value, in the project's units
    results: Mapping[str, Mapping[str, float]]
    #: where the figures are printed
    source: str
    note: str = field(default="")


def _percent(value: float) -> float:
    """A figure the papers print in percent, as the project's fraction."""
    return round(value / 100.0, 6)


def _pascal(seg: float, parts: float, sal: float, normals: float, edge: float) -> dict[str, dict[str, float]]:
    """PASCAL-Context's columns as the papers order them: seg mIoU, parts mIoU, saliency maxF (%),
    normals mean error (deg), edge odsF (%)."""
    return {"segmentation": {"miou": _percent(seg)}, "human_parts": {"miou": _percent(parts)},
            "saliency": {"maxf": _percent(sal)}, "normal": {"mean": normals}, "edge": {"odsf": _percent(edge)}}


def _nyud(seg: float, depth_rmse: float, normals: float, edge: float) -> dict[str, dict[str, float]]:
    """NYUD-v2's columns as the papers order them: seg mIoU (%), depth RMSE (m), normals mean error
    (deg), edge odsF (%)."""
    return {"segmentation": {"miou": _percent(seg)}, "depth": {"rmse": depth_rmse},
            "normal": {"mean": normals}, "edge": {"odsf": _percent(edge)}}


_INVPT_README = "prismformore/Multi-Task-Transformer, InvPT/README.md, 'Pre-trained InvPT models' tables"
_TASKPROMPTER_README = "prismformore/Multi-Task-Transformer, TaskPrompter/README.md, 'Pre-trained models' table"
_VIT_L = "ViT-L/16 (ImageNet-21k, fine-tuned on ImageNet-1k at 384 px)"
_ADAM = "Adam, lr 2e-5, weight decay 1e-6, poly decay, 40k iterations"
#: InvPT's configs and run.sh (PASCAL-Context: 3 GPUs x 2; NYUD-v2's launch script is not in the files read)
_INVPT_SCHEDULE = f"{_ADAM}, batch 2 per GPU (PASCAL-Context: 3 GPUs, batch 6)"
#: TaskPrompter's configs and run_taskprompter_{pascal,nyud}.sh
_TASKPROMPTER_PASCAL = f"{_ADAM}, batch 6 (3 GPUs x 2), gradients clipped at norm 10"
_TASKPROMPTER_NYUD = f"{_ADAM}, batch 4 (2 GPUs x 2), gradients clipped at norm 10"
_ATRC = "HRNet (ATRC's README: 'based on HRNet backbones'; the variant behind the cited figures is not in the files read)"

PUBLISHED: dict[str, tuple[PublishedResult, ...]] = {
    "pascal_context": (
        PublishedResult("ATRC", _ATRC, "not in the files read", _pascal(67.67, 62.93, 82.29, 14.24, 72.42),
                        _INVPT_README + ", row 'ATRC (ICCV 2021)'", "ICCV 2021, as InvPT cites it"),
        PublishedResult("InvPT", _VIT_L, _INVPT_SCHEDULE, _pascal(79.03, 67.61, 84.81, 14.15, 73.00),
                        _INVPT_README + ", row 'InvPT (our paper)'", "ECCV 2022, the paper's figures"),
        PublishedResult("InvPT*", _VIT_L, _INVPT_SCHEDULE, _pascal(79.91, 68.54, 84.38, 13.90, 72.90),
                        _INVPT_README + ", row 'InvPT*'", "re-trained with the released code; weights released"),
        PublishedResult("TaskPrompter", _VIT_L, _TASKPROMPTER_PASCAL, _pascal(80.79, 68.81, 84.26, 13.58, 73.80),
                        _TASKPROMPTER_README, "ICLR 2023, released weights"),
    ),
    "nyud_v2": (
        PublishedResult("ATRC", _ATRC, "not in the files read", _nyud(46.33, 0.5363, 20.18, 77.94),
                        _INVPT_README + ", row 'ATRC (ICCV 2021)'", "ICCV 2021, as InvPT cites it"),
        PublishedResult("InvPT", _VIT_L, _INVPT_SCHEDULE, _nyud(53.56, 0.5183, 19.04, 78.10),
                        _INVPT_README + ", row 'InvPT (our paper)'", "ECCV 2022, the paper's figures"),
        PublishedResult("InvPT*", _VIT_L, _INVPT_SCHEDULE, _nyud(53.65, 0.5083, 18.68, 77.80),
                        _INVPT_README + ", row 'InvPT*'", "re-trained with the released code; weights released"),
        PublishedResult("TaskPrompter", _VIT_L, _TASKPROMPTER_NYUD, _nyud(55.90, 0.5062, 18.58, 77.70),
                        _TASKPROMPTER_README, "ICLR 2023, released weights"),
    ),
}


def published(dataset: str) -> tuple[PublishedResult, ...]:
    """The published rows of a benchmark (``data.dataset`` name); ValueError naming the choices."""
    if dataset not in PUBLISHED:
        raise ValueError(f"no published figures for {dataset!r} (known: {', '.join(PUBLISHED)})")
    return PUBLISHED[dataset]
