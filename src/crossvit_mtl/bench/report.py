"""A bench's report: every case's figures, the share of the matrix-product peak they reach, the
project's speed targets as ratios measured in the same run, as JSON and markdown."""
from __future__ import annotations

import json
import os
import statistics
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from crossvit_mtl.bench.cases import (
    BASE_SIZE,
    LARGE_SIZES,
    PEER,
    THESIS_TARGET,
    Case,
    Result,
    describe,
    model_label,
    variant_label,
)
from crossvit_mtl.bench.measure import PEAK_DTYPES, load_average, machine_peaks, run_cases
from crossvit_mtl.engine.precision import resolve


def _key(result: Result) -> tuple:
    c = result.case
    return c.model, tuple(c.size), c.precision, c.batch_size, c.variant, c.system_malloc


def _find(results: list[Result], model: str, size=BASE_SIZE, precision: str = "bf16",
          batch_size: int = 8, variant: str = "eager", system_malloc: bool = False) -> Result | None:
    want = (model, tuple(size), precision, batch_size, variant, system_malloc)
    return next((r for r in results if _key(r) == want and r.error is None), None)


def summarize(results: list[Result], default_precision: str, peaks: dict[str, float]) -> dict[str, Any]:
    """The project's speed targets as ratios of figures measured in this run (None if a case
    was not run), beside the bf16/fp32 matrix-peak ratio that bounds what bf16 can buy."""
    p, out = default_precision, {}
    if "bf16" in peaks:
        out["matmul_peak_bf16_over_fp32"] = peaks["bf16"] / peaks["fp32"]
    fast = _find(results, THESIS_TARGET, precision=p)
    baselines = {"fp32_eager": _find(results, THESIS_TARGET, precision="fp32", system_malloc=True),
                 "fp32": _find(results, THESIS_TARGET, precision="fp32")}  # same allocator: precision alone
    for name, slow in baselines.items():
        if fast and slow:
            out[f"thesis_seg_dc128_default_vs_{name}_train_speedup"] = fast.train_img_s / slow.train_img_s
            out[f"thesis_seg_dc128_default_vs_{name}_train_speedup_best"] = (
                fast.train_img_s_best / slow.train_img_s_best)
    for prec in dict.fromkeys((p, "fp32")):
        ours, peer = _find(results, "crossvit_seg_small", precision=prec), _find(results, PEER, precision=prec)
        if ours and peer:
            out[f"crossvit_seg_small_vs_segformer_b0_{prec}_train_ratio"] = ours.train_img_s / peer.train_img_s
            out[f"crossvit_seg_small_vs_segformer_b0_{prec}_latency_ratio"] = ours.latency_ms / peer.latency_ms
            out[f"crossvit_seg_small_vs_segformer_b0_{prec}_train_ratio_best"] = (
                ours.train_img_s_best / peer.train_img_s_best)
            out[f"crossvit_seg_small_vs_segformer_b0_{prec}_latency_ratio_best"] = (
                ours.latency_ms_best / peer.latency_ms_best)
        big = _find(results, "crossvit_seg_small", LARGE_SIZES[-1], prec)
        if ours and big:
            out[f"crossvit_seg_small_{prec}_train_512x1024_over_128x256"] = big.train_img_s / ours.train_img_s
            out[f"crossvit_seg_small_{prec}_train_512x1024_over_128x256_best"] = (
                big.train_img_s_best / ours.train_img_s_best)
    return out


def result_row(result: Result, peaks: dict[str, float]) -> dict[str, Any]:
    """The flat record written to JSON: the case, the figures, achieved training GFLOP/s and its
    fraction of the matrix-product peak of the same precision."""
    row = {**asdict(result.case), **{k: v for k, v in asdict(result).items() if k != "case"}}
    row["label"] = describe(result.case)
    if result.error is None:
        achieved = result.gflops_train * result.train_img_s
        row["achieved_gflop_s"] = achieved
        peak = peaks.get(result.case.precision)
        row["fraction_of_peak"] = achieved / (peak * 1e3) if peak else None
    return row


def _peaks_text(peaks: dict[str, float]) -> str:
    parts = []
    for precision in (p for p in PEAK_DTYPES if p in peaks):
        routes = [f"{key.partition(' ')[2]} {value:.2f}" for key, value in peaks.items()
                  if key.startswith(f"{precision} ")]
        parts.append(f"{precision} {peaks[precision]:.2f} TFLOP/s" + (f" ({', '.join(routes)})" if routes else ""))
    return ", ".join(parts)


def markdown(rows: list[dict], report: dict[str, Any]) -> str:
    m = report["machine"]
    peaks, cuda = m["matmul_peak_tflop_s"], m["device"].startswith("cuda")
    lines = [
        "| model | size | precision | batch | variant | params (M) | GFLOPs fwd/img | train img/s (best) "
        f"| batch-1 ms (best) | train peak {'CUDA' if cuda else 'RSS'} +MB | train GFLOP/s | % of matmul peak "
        "| first step s | load |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        head = (f"| {model_label(r['model'])} | {r['size'][0]}x{r['size'][1]} | {r['precision']} | {r['batch_size']} "
                f"| {variant_label(r['variant'], r['system_malloc'])} ")
        if r["error"]:
            lines.append(head + f"| failed: {r['error'][:80]} |" + " |" * 8)
            continue
        share = "-" if r["fraction_of_peak"] is None else f"{100 * r['fraction_of_peak']:.1f}"
        lines.append(head + (
            f"| {r['params_m']:.2f} | {r['gflops_fwd']:.2f} | {r['train_img_s']:.2f} ({r['train_img_s_best']:.2f}) "
            f"| {r['latency_ms']:.1f} ({r['latency_ms_best']:.1f}) | {r['mem_train_mb']:.0f} "
            f"| {r['achieved_gflop_s']:.0f} | {share} | {r['first_step_s']:.1f} | {r['load']} |"))
    routes = ("8192^2 product, best of torch.mm, torch.mm in TF32 (fp32) and a 1x1 cuDNN convolution" if cuda
              else "2048^2 product, best of torch.mm and a 1x1 oneDNN convolution")
    memory = ("growth of torch.cuda.max_memory_allocated over the built model" if cuda
              else "peak RSS growth over the built model (resource.ru_maxrss)")
    lines += ["", f"Device: {m['device']} ({m['device_name']}). Matrix-product peak measured in this run "
              f"({routes}, of start and end): {_peaks_text(peaks)}. "
              f"torch {m['torch']}, {'/'.join(map(str, m['threads']))} threads; 1-minute load average {m['load_before']} "
              f"before, {m['load_after']} after (load column: at each case's start).",
              "Train: forward + loss + backward + AdamW step, median (fastest) of single steps after warm-up"
              f"{', timed between CUDA events' if cuda else ''}; GFLOP/s and % of peak use the median and "
              f"counted forward+backward FLOPs. Memory: {memory}, fresh process per case, including optimiser state."]
    if report.get("rounds", 1) > 1:
        lines += [f"Every case ran {report['rounds']} times, the plan's cases in turn: each row gives the medians "
                  "(best: the best) over its runs, each target the median of its ratios within a run of the plan."]
    if report["summary"]:
        lines += ["", "| target | measured |", "|---|---:|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in report["summary"].items()]
    return "\n".join(lines)


def combine(rounds: list[list[Result]]) -> list[Result]:
    """Each case over rounds of the same plan: the medians of its speeds and times, the best of
    its best figures, every timed step and run, the largest memory."""
    out = []
    for runs in zip(*rounds):
        ok = [r for r in runs if r.error is None]
        if len(ok) < 2:
            out.append(ok[0] if ok else runs[0])
            continue
        out.append(replace(
            ok[0], train_img_s=statistics.median(r.train_img_s for r in ok),
            train_img_s_best=max(r.train_img_s_best for r in ok),
            latency_ms=statistics.median(r.latency_ms for r in ok), latency_ms_best=min(r.latency_ms_best for r in ok),
            train_step_ms=[t for r in ok for t in r.train_step_ms],
            latency_runs_ms=[t for r in ok for t in r.latency_runs_ms],
            mem_train_mb=max(r.mem_train_mb for r in ok), mem_infer_mb=max(r.mem_infer_mb for r in ok)))
    return out


def summarize_rounds(rounds: list[list[Result]], default_precision: str, peaks: dict[str, float]) -> dict[str, Any]:
    """The targets' ratios as medians over rounds of the ratio within each round (cases of one
    round ran next to each other, so load from other jobs falls on both sides of a ratio alike)."""
    per_round = [summarize(results, default_precision, peaks) for results in rounds]
    keys = [k for k in per_round[0] if all(k in r for r in per_round)]
    return {k: statistics.median(r[k] for r in per_round) for k in keys}


def make_report(results: list[Result], peaks_start: dict[str, float],
                peaks_end: dict[str, float] | None, load_before: float | None, device: str = "cpu",
                rounds: list[list[Result]] | None = None) -> dict[str, Any]:
    """The report of ``results``; with ``rounds`` (several runs of the same plan), of their
    combination (:func:`combine`) with the targets' ratios taken round by round."""
    if rounds and len(rounds) > 1:
        results = combine(rounds)
    peaks = {k: max(v, (peaks_end or {}).get(k, v)) for k, v in peaks_start.items()}
    placement = resolve(device)
    cuda = placement.device.type == "cuda"
    report: dict[str, Any] = {
        "machine": {"torch": torch.__version__, "cuda": torch.version.cuda, "device": str(placement.device),
                    "device_name": placement.name,
                    "threads": sorted({r.case.threads or torch.get_num_threads() for r in results}),
                    "matmul_peak_tflop_s": peaks, "matmul_peak_start": peaks_start,
                    "matmul_peak_end": peaks_end, "load_before": load_before, "load_after": load_average()},
        "default_precision": placement.precision,
        "default_precision_reason": placement.reason,
        "memory_method": ("growth of torch.cuda.max_memory_allocated over the built model" if cuda else
                          "peak RSS growth over the built model, resource.ru_maxrss") + ", fresh process per case",
        "results": [result_row(r, peaks) for r in results],
        "rounds": len(rounds) if rounds else 1,
        "summary": (summarize_rounds(rounds, placement.precision, peaks) if rounds and len(rounds) > 1
                    else summarize(results, placement.precision, peaks)),
    }
    report["markdown"] = markdown(report["results"], report)
    return report


def write_report(report: dict[str, Any], out: str | os.PathLike) -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.json").write_text(json.dumps(report, indent=2))
    (folder / "bench.md").write_text(report["markdown"] + "\n")


def benchmark(cases: list[Case], out: str | os.PathLike | None = None, progress=print,
              rounds: int = 1) -> dict[str, Any]:
    """Run ``cases``, all on one device, ``rounds`` times in turn; return (and with ``out``, write
    ``bench.json`` and ``bench.md``, updated after every case) the report."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    devices = {case.device for case in cases} or {"cpu"}
    if len(devices) > 1:
        raise ValueError(f"one bench runs on one device, got cases on {', '.join(sorted(devices))}")
    device = devices.pop()
    load_before = load_average()
    peaks_start = machine_peaks(device)
    done: list[list[Result]] = []
    for i in range(rounds):
        if progress and rounds > 1:
            progress(f"round {i + 1} of {rounds}")
        partial = None if out is None else (lambda results: write_report(
            make_report(results, peaks_start, None, load_before, device, done + [results]), out))
        done.append(run_cases(cases, progress, partial))
    report = make_report(done[-1], peaks_start, machine_peaks(device), load_before, device, done)
    if out is not None:
        write_report(report, out)
    return report
