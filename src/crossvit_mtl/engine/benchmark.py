"""Speed of the zoo on this machine's CPU or GPU: training images/s, batch-1 latency, peak
memory, FLOPs and the fraction of the device's matrix-product peak that training reaches, with
SegFormer-B0 (HF transformers) as the peer a user would otherwise pick.

Every case (model, size, precision, batch size, variant) runs in a fresh process, so one case's
allocator state, compiled kernels and thread pools never leak into the next, and the process's
peak resident set (``resource.ru_maxrss``; on CUDA ``torch.cuda.max_memory_allocated``)
measures that case alone. Times are medians of single steps after warm-up, on CUDA between
CUDA events after synchronising; on a shared machine only ratios measured in one run mean much.
"""
from __future__ import annotations

import ast
import concurrent.futures
import json
import multiprocessing
import os
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crossvit_mtl.engine.precision import resolve

#: the segmentation and multi-task zoo, the thesis network with the prototype's decoder width,
#: and the peer
DEFAULT_MODELS = ("thesis_seg", "thesis_seg:decoder_channels=128", "crossvit_seg_tiny",
                  "crossvit_seg_small", "crossvit_seg_base", "crossvit_mtl_tiny",
                  "crossvit_mtl_small", "crossvit_mtl_base", "segformer_b0")
BASE_SIZE = (128, 256)
#: the default preset and its peer are also measured at the larger Cityscapes-like sizes
LARGE_SIZES = ((256, 512), (512, 1024))
LARGE_SIZE_MODELS = ("crossvit_seg_small", "segformer_b0")
VARIANTS = ("eager", "channels_last", "compile")
#: "kept": freed host memory kept for reuse, the project's default (engine/host_memory.py)
ALLOCATORS = ("kept", "system")
PEER = "segformer_b0"
#: the network of the bf16-vs-fp32 target; its fp32 case is also run as plain PyTorch would
#: (system allocator), the "fp32 eager" baseline the target is measured against
THESIS_TARGET = "thesis_seg:decoder_channels=128"


@dataclass
class Case:
    """One measurement. ``model`` is a preset name, optionally with overrides
    (``thesis_seg:decoder_channels=128``), or ``segformer_b0``."""

    model: str
    size: tuple[int, int] = BASE_SIZE
    precision: str = "bf16"  # resolved: "bf16", "fp16" or "fp32"
    batch_size: int = 8
    variant: str = "eager"
    repeats: int = 5
    warmup: int = 2
    latency_runs: int = 15
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    system_malloc: bool = False  # leave glibc's allocator as it is (engine/host_memory.py)
    device: str = "cpu"  # "cpu" or "cuda:N"


@dataclass
class Result:
    case: Case
    params_m: float = 0.0
    gflops_fwd: float = 0.0  # per image, forward
    gflops_train: float = 0.0  # per image, forward + backward (counted, not estimated)
    train_img_s: float = 0.0  # from the median step
    train_img_s_best: float = 0.0  # from the fastest step: less sensitive to other jobs' load
    train_step_ms: list[float] = field(default_factory=list)
    first_step_s: float = 0.0  # includes compilation for the "compile" variant
    first_infer_s: float = 0.0  # likewise, for the inference graph
    latency_ms: float = 0.0  # median
    latency_ms_best: float = 0.0
    latency_runs_ms: list[float] = field(default_factory=list)
    mem_train_mb: float = 0.0  # peak RSS (CUDA: allocated) growth over the built model, during training
    mem_infer_mb: float = 0.0  # the same up to the end of batch-1 inference (measured first)
    load: float | None = None  # 1-minute load average when the case started
    error: str | None = None


# ------------------------------------------------------------------------------ models
def _split_top_level(text: str) -> list[str]:
    """Split on the commas outside brackets."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    return items + [text[start:]]


def parse_model(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name:key=value,key=value"`` -> (name, overrides); values are Python literals, lists
    included (``heads=[2,3]``: commas inside brackets do not separate overrides)."""
    name, _, rest = spec.partition(":")
    overrides = {}
    for item in filter(None, _split_top_level(rest)):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"model override {item!r} in {spec!r} must look like key=value")
        try:
            overrides[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            overrides[key.strip()] = value.strip()
    return name, overrides


class SegformerDense(nn.Module):
    """SegFormer returning ``{"segmentation": logits}`` upsampled to the input size, as users
    train it (its head predicts at 1/4 resolution)."""

    def __init__(self, num_classes: int = 8):
        super().__init__()
        try:
            from transformers import SegformerConfig, SegformerForSemanticSegmentation
        except ImportError as err:  # the peer is optional: pip install 'crossvit-mtl[bench]'
            raise ImportError("segformer_b0 needs HF transformers: pip install 'crossvit-mtl[bench]'") from err
        # SegformerConfig() defaults are B0: widths 32/64/160/256, depths 2/2/2/2, decoder 256
        self.net = SegformerForSemanticSegmentation(SegformerConfig(num_labels=num_classes))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.net(pixel_values=x).logits
        return {"segmentation": F.interpolate(logits, size=x.shape[-2:], mode="bilinear",
                                              align_corners=False)}


def build_model(spec: str, size: tuple[int, int]) -> nn.Module:
    """A zoo preset sized for ``size`` (its positions fit the grid), or the SegFormer peer."""
    name, overrides = parse_model(spec)
    if name == PEER:
        return SegformerDense(**overrides)
    from crossvit_mtl.models import PRESETS, create_model

    if name not in PRESETS or PRESETS[name]["arch"] == "crossvit":
        dense = [n for n, p in PRESETS.items() if p["arch"] != "crossvit"]
        raise ValueError(f"unknown dense model {name!r}; choose from {', '.join(dense + [PEER])}")
    overrides.setdefault("img_size", tuple(size))
    return create_model(name, **overrides)


def synthetic_batch(model: nn.Module, size: tuple[int, int], batch_size: int) -> tuple[torch.Tensor, dict]:
    """A random image batch and targets of every task the model predicts, on its device."""
    gen, device = torch.Generator().manual_seed(0), next(model.parameters()).device
    images = torch.randn(batch_size, 3, *size, generator=gen)
    with torch.no_grad():
        shapes = {t: tuple(v.shape) for t, v in model.eval()(images[:1].to(device)).items()}
    model.train()
    targets: dict[str, torch.Tensor] = {}
    for task, shape in shapes.items():
        if task in ("segmentation", "classification"):
            targets[task] = torch.randint(shape[1], (batch_size, *shape[2:]), generator=gen)
        elif task == "depth":
            targets[task] = torch.rand(batch_size, *shape[1:], generator=gen) + 0.1
        else:  # normal: unit vectors
            targets[task] = F.normalize(torch.randn(batch_size, *shape[1:], generator=gen), dim=1)
    return images.to(device), {task: value.to(device) for task, value in targets.items()}


# ---------------------------------------------------------------------------- measuring
def _maxrss_mb() -> float:
    scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 2**10  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _peak_mb(device: torch.device) -> float:
    """The process's peak resident set, or on CUDA the peak of memory allocated on the device."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _maxrss_mb()


def _timed(fn, runs: int, device: torch.device = torch.device("cpu")) -> list[float]:
    """Seconds of each of ``runs`` calls; on CUDA between two CUDA events, queued work finished
    before the first."""
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return times


def measure_case(case: Case) -> Result:
    """Measure one case in this process; meant for a fresh process (see :func:`run_cases`)."""
    from crossvit_mtl.engine.host_memory import keep_host_memory
    from crossvit_mtl.engine.optim import build_optimizer
    from crossvit_mtl.models.flops import count_flops
    from crossvit_mtl.tasks import build_loss

    if not case.system_malloc and not keep_host_memory():
        # opted out (CROSSVIT_MTL_SYSTEM_MALLOC) or not glibc: label the row as what it measured
        case = replace(case, system_malloc=True)
    if case.threads:
        torch.set_num_threads(case.threads)
    result = Result(case, load=_load())
    placement = resolve(case.device, case.precision)
    device = placement.device
    if device.type == "cuda":
        torch.cuda.set_device(device)  # the CUDA events' stream
    torch.manual_seed(0)
    model = build_model(case.model, case.size).to(device)
    result.params_m = sum(p.numel() for p in model.parameters()) / 1e6
    optimizer = build_optimizer(model, "adamw", 1e-3, 0.05)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device) / 2**20
    else:
        baseline = _maxrss_mb()  # growth from here on includes the input batch and its targets
    images, targets = synthetic_batch(model, case.size, case.batch_size)
    criteria = {t: build_loss(t) for t in targets}
    runner = model
    if case.variant == "channels_last":
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    elif case.variant == "compile":
        runner = torch.compile(model)

    single = images[:1]

    def infer():
        with torch.inference_mode(), placement.autocast():
            runner(single)

    model.eval()
    result.first_infer_s = _timed(infer, 1, device)[0]
    result.latency_runs_ms = [t * 1e3 for t in _timed(infer, 2 + case.latency_runs, device)][2:]
    result.latency_ms = statistics.median(result.latency_runs_ms)
    result.latency_ms_best = min(result.latency_runs_ms)
    result.mem_infer_mb = _peak_mb(device) - baseline

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with placement.autocast():
            outputs = runner(images)
        loss = sum(criteria[t](outputs[t], targets[t]) for t in criteria)
        loss.backward()
        optimizer.step()

    model.train()
    first, *_ = _timed(train_step, max(case.warmup, 1), device)
    result.first_step_s = first
    steps = _timed(train_step, case.repeats, device)
    result.train_step_ms = [t * 1e3 for t in steps]
    result.train_img_s = case.batch_size / statistics.median(steps)
    result.train_img_s_best = case.batch_size / min(steps)
    result.mem_train_mb = _peak_mb(device) - baseline

    model.to("cpu", memory_format=torch.contiguous_format)  # FLOPs are counted on the CPU
    result.gflops_fwd = count_flops(model, case.size) / 1e9
    result.gflops_train = count_flops(model, case.size, backward=True) / 1e9
    return result


def _measure_safely(case: Case) -> Result:
    try:
        return measure_case(case)
    except Exception as err:  # one failing case (e.g. out of memory) must not lose the others
        return Result(case, error=f"{type(err).__name__}: {err}")


def run_cases(cases: list[Case], progress=print, on_result=None) -> list[Result]:
    """Each case in its own fresh (spawned) process, one after the other; ``on_result`` sees
    the results so far after each case (to save partial reports of long runs)."""
    results = []
    ctx = multiprocessing.get_context("spawn")
    for i, case in enumerate(cases, 1):
        try:
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
                result = pool.submit(_measure_safely, case).result()
        except concurrent.futures.process.BrokenProcessPool:  # killed, e.g. by the OOM killer
            result = Result(case, error="the measuring process died (out of memory?)")
        results.append(result)
        if progress:
            progress(f"[{i}/{len(cases)}] {describe(case)}: " + (
                result.error or f"train {result.train_img_s:.2f} img/s (best {result.train_img_s_best:.2f}), "
                f"batch-1 {result.latency_ms:.1f} ms (best {result.latency_ms_best:.1f})"))
        if on_result:
            on_result(results)
    return results


def matmul_peaks(dtype: torch.dtype, n: int | None = None, runs: int = 5, device: str = "cpu") -> dict[str, float]:
    """TFLOP/s of one n x n x n matrix product in ``dtype`` through each of PyTorch's matrix
    libraries: ``torch.mm`` and a channels-last 1x1 convolution (oneDNN on the CPU, cuDNN on
    CUDA).

    CPU: MKL's fp32 ``torch.mm`` reaches about half of oneDNN's on AMD CPUs, so ``torch.mm``
    alone understates the fp32 peak; n=2048, as at 4096 both fall off in bf16 on this class of
    machine. CUDA: n=8192, and fp32 also as TF32 products (``torch.mm TF32``), which PyTorch's
    default gives cuDNN's convolutions but not ``torch.mm``.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    n = n or (8192 if cuda else 2048)
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    image = torch.randn(1, n, n, 1, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(n, n, 1, 1, device=device).to(dtype)  # n pixels x n channels -> n channels
    routes = {"torch.mm": lambda: torch.mm(a, b), "cuDNN" if cuda else "oneDNN": lambda: F.conv2d(image, weight)}
    peaks = {}
    for route, product in routes.items():
        product()
        peaks[route] = 2 * n**3 / min(_timed(product, runs, device)) / 1e12
    if cuda and dtype == torch.float32:
        before = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high")  # TF32 products
        try:
            torch.mm(a, b)
            peaks["torch.mm TF32"] = 2 * n**3 / min(_timed(lambda: torch.mm(a, b), runs, device)) / 1e12
        finally:
            torch.set_float32_matmul_precision(before)
    return peaks


#: the precisions whose matrix-product peak is measured, per device type
PEAK_PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "bf16", "fp16")}
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def machine_peaks(device: str = "cpu") -> dict[str, float]:
    """Per precision, the best route's TFLOP/s (``fp32``, ``bf16``, on CUDA ``fp16``), and each
    route's (``"fp32 torch.mm"``). A precision the device cannot multiply in is left out."""
    out = {}
    for name in PEAK_PRECISIONS[torch.device(device).type]:
        try:
            routes = matmul_peaks(_DTYPES[name], device=device)
        except RuntimeError:  # e.g. bf16 products on a GPU older than compute capability 8.0
            continue
        out[name] = max(routes.values())
        out.update({f"{name} {route}": value for route, value in routes.items()})
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()  # the measuring cases run in processes of their own
    return out


# ------------------------------------------------------------------------------ planning
def plan(models=DEFAULT_MODELS, sizes=None, precisions=("auto", "fp32"), batch_sizes=(8,),
         variants=("eager",), repeats: int = 5, warmup: int = 2, latency_runs: int = 15,
         threads: int | None = None, allocators=("kept",), device: str = "cpu") -> list[Case]:
    """The cases to run on ``device``. Without ``sizes``: every model at 128x256, and the default
    preset and its peer also at 256x512 and 512x1024. Variants and allocators of one model run
    next to each other."""
    for what, values, choices in (("variant", variants, VARIANTS), ("allocator", allocators, ALLOCATORS)):
        for value in values:
            if value not in choices:
                raise ValueError(f"{what} must be one of {choices}, got {value!r}")
    resolved = list(dict.fromkeys(resolve(device, p).precision for p in precisions))
    cases = []
    for model in models:
        model_sizes = sizes or [BASE_SIZE] + (list(LARGE_SIZES) if model in LARGE_SIZE_MODELS else [])
        for size in model_sizes:
            for precision in resolved:
                for batch in batch_sizes:
                    for variant in variants:
                        chosen = list(allocators)
                        target = (THESIS_TARGET, BASE_SIZE, "fp32", "eager", "cpu")
                        if (model, tuple(size), precision, variant, device) == target:
                            chosen = list(dict.fromkeys(chosen + ["system"]))
                        cases += [Case(model, tuple(size), precision, batch, variant, repeats, warmup,
                                       latency_runs, threads, a == "system", device) for a in chosen]
    return cases


# ------------------------------------------------------------------------------ reporting
def model_label(spec: str) -> str:
    name, overrides = parse_model(spec)
    return name + (f" ({', '.join(f'{k}={v}' for k, v in overrides.items())})" if overrides else "")


def variant_label(variant: str, system_malloc: bool) -> str:
    return variant + (", system malloc" if system_malloc else "")


def describe(case: Case) -> str:
    return (f"{model_label(case.model)} {case.size[0]}x{case.size[1]} {case.precision} "
            f"b{case.batch_size} {variant_label(case.variant, case.system_malloc)}")


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
    for precision in (p for p in _DTYPES if p in peaks):
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
    if report["summary"]:
        lines += ["", "| target | measured |", "|---|---:|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in report["summary"].items()]
    return "\n".join(lines)


def _load() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def make_report(results: list[Result], peaks_start: dict[str, float],
                peaks_end: dict[str, float] | None, load_before: float | None, device: str = "cpu") -> dict[str, Any]:
    peaks = {k: max(v, (peaks_end or {}).get(k, v)) for k, v in peaks_start.items()}
    placement = resolve(device)
    cuda = placement.device.type == "cuda"
    report = {
        "machine": {"torch": torch.__version__, "cuda": torch.version.cuda, "device": str(placement.device),
                    "device_name": placement.name,
                    "threads": sorted({r.case.threads or torch.get_num_threads() for r in results}),
                    "matmul_peak_tflop_s": peaks, "matmul_peak_start": peaks_start,
                    "matmul_peak_end": peaks_end, "load_before": load_before, "load_after": _load()},
        "default_precision": placement.precision,
        "default_precision_reason": placement.reason,
        "memory_method": ("growth of torch.cuda.max_memory_allocated over the built model" if cuda else
                          "peak RSS growth over the built model, resource.ru_maxrss") + ", fresh process per case",
        "results": [result_row(r, peaks) for r in results],
        "summary": summarize(results, placement.precision, peaks),
    }
    report["markdown"] = markdown(report["results"], report)
    return report


def write_report(report: dict[str, Any], out: str | os.PathLike) -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.json").write_text(json.dumps(report, indent=2))
    (folder / "bench.md").write_text(report["markdown"] + "\n")


def benchmark(cases: list[Case], out: str | os.PathLike | None = None, progress=print) -> dict[str, Any]:
    """Run ``cases``, all on one device; return (and with ``out``, write ``bench.json`` and
    ``bench.md``, updated after every case) the report."""
    devices = {case.device for case in cases} or {"cpu"}
    if len(devices) > 1:
        raise ValueError(f"one bench runs on one device, got cases on {', '.join(sorted(devices))}")
    device = devices.pop()
    load_before = _load()
    peaks_start = machine_peaks(device)
    partial = None if out is None else (
        lambda results: write_report(make_report(results, peaks_start, None, load_before, device), out))
    results = run_cases(cases, progress, partial)
    report = make_report(results, peaks_start, machine_peaks(device), load_before, device)
    if out is not None:
        write_report(report, out)
    return report
