"""Measuring one case in a fresh process, and the device's matrix-product peak."""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crossvit_mtl.bench.cases import Case, Result, describe
from crossvit_mtl.bench.models import build_model, synthetic_batch
from crossvit_mtl.engine.host_memory import keep_host_memory
from crossvit_mtl.engine.optim import build_optimizer
from crossvit_mtl.engine.precision import Placement, resolve
from crossvit_mtl.models.flops import count_flops
from crossvit_mtl.tasks import get_task

CPU = torch.device("cpu")


def _maxrss_mb() -> float:
    scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 2**10  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _peak_mb(device: torch.device) -> float:
    """The process's peak resident set, or on CUDA the peak of memory allocated on the device."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _maxrss_mb()


def _timed(fn, runs: int, device: torch.device = CPU) -> list[float]:
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
            begin = time.perf_counter()
            fn()
            times.append(time.perf_counter() - begin)
    return times


@dataclass
class Workload:
    """What a case runs: the network, its optimiser, a batch with every task's targets, and the
    two things timed, one training step and one batch-1 forward."""

    model: nn.Module
    placement: Placement
    train_step: Callable[[], None]
    infer: Callable[[], None]


def prepare(case: Case, built: Callable[[], None] | None = None) -> Workload:
    """Build the case's network (seeded), optimiser (the project's AdamW) and batch; applies the
    case's threads and variant; ``built`` is called once the network is. Host memory is the
    caller's (:func:`measure_case`)."""
    if case.threads:
        torch.set_num_threads(case.threads)
    placement = resolve(case.device, case.precision)
    device = placement.device
    if device.type == "cuda":
        torch.cuda.set_device(device)  # the CUDA events' stream
    torch.manual_seed(0)
    model = build_model(case.model, case.size).to(device)
    optimizer = build_optimizer(model, "adamw", 1e-3, 0.05)
    if built is not None:
        built()
    images, targets = synthetic_batch(model, case.size, case.batch_size)
    criteria = {t: get_task(t).build_loss() for t in targets}
    runner: Callable[..., Any] = model
    if case.variant == "channels_last":
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        images = images.contiguous(memory_format=torch.channels_last)
    elif case.variant == "compile":
        runner = torch.compile(model)
    single = images[:1]

    def infer():
        with torch.inference_mode(), placement.autocast():
            runner(single)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with placement.autocast():
            outputs = runner(images)
        loss = sum(criteria[t](outputs[t], targets[t]) for t in criteria)
        loss.backward()
        optimizer.step()

    return Workload(model, placement, train_step, infer)


def measure_case(case: Case) -> Result:
    """Measure one case in this process; meant for a fresh process (see :func:`run_cases`)."""
    if not case.system_malloc and not keep_host_memory():
        # opted out (CROSSVIT_MTL_SYSTEM_MALLOC) or not glibc: label the row as what it measured
        case = replace(case, system_malloc=True)
    result = Result(case, load=load_average())
    device = resolve(case.device, case.precision).device
    baseline = 0.0

    def built():  # growth from here on includes the input batch and its targets
        nonlocal baseline
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            baseline = torch.cuda.memory_allocated(device) / 2**20
        else:
            baseline = _maxrss_mb()

    work = prepare(case, built)
    model = work.model
    result.params_m = sum(p.numel() for p in model.parameters()) / 1e6

    model.eval()
    result.first_infer_s = _timed(work.infer, 1, device)[0]
    result.latency_runs_ms = [t * 1e3 for t in _timed(work.infer, 2 + case.latency_runs, device)][2:]
    result.latency_ms = statistics.median(result.latency_runs_ms)
    result.latency_ms_best = min(result.latency_runs_ms)
    result.mem_infer_mb = _peak_mb(device) - baseline

    model.train()
    first, *_ = _timed(work.train_step, max(case.warmup, 1), device)
    result.first_step_s = first
    steps = _timed(work.train_step, case.repeats, device)
    result.train_step_ms = [t * 1e3 for t in steps]
    result.train_img_s = case.batch_size / statistics.median(steps)
    result.train_img_s_best = case.batch_size / min(steps)
    result.mem_train_mb = _peak_mb(device) - baseline

    model.to("cpu", memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # FLOPs are counted on the CPU
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
    where = torch.device(device)
    cuda = where.type == "cuda"
    n = n or (8192 if cuda else 2048)
    a, b = torch.randn(n, n, device=where).to(dtype), torch.randn(n, n, device=where).to(dtype)
    image = torch.randn(1, n, n, 1, device=where).to(dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(n, n, 1, 1, device=where).to(dtype)  # n pixels x n channels -> n channels
    routes = {"torch.mm": lambda: torch.mm(a, b), "cuDNN" if cuda else "oneDNN": lambda: F.conv2d(image, weight)}
    peaks = {}
    for route, product in routes.items():
        product()
        peaks[route] = 2 * n**3 / min(_timed(product, runs, where)) / 1e12
    if cuda and dtype == torch.float32:
        before = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high")  # TF32 products
        try:
            torch.mm(a, b)
            peaks["torch.mm TF32"] = 2 * n**3 / min(_timed(lambda: torch.mm(a, b), runs, where)) / 1e12
        finally:
            torch.set_float32_matmul_precision(before)
    return peaks


#: the precisions whose matrix-product peak is measured, per device type
PEAK_PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "bf16", "fp16")}
PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def machine_peaks(device: str = "cpu") -> dict[str, float]:
    """Per precision, the best route's TFLOP/s (``fp32``, ``bf16``, on CUDA ``fp16``), and each
    route's (``"fp32 torch.mm"``). A precision the device cannot multiply in is left out."""
    out = {}
    for name in PEAK_PRECISIONS[torch.device(device).type]:
        try:
            routes = matmul_peaks(PEAK_DTYPES[name], device=device)
        except RuntimeError:  # e.g. bf16 products on a GPU older than compute capability 8.0
            continue
        out[name] = max(routes.values())
        out.update({f"{name} {route}": value for route, value in routes.items()})
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()  # the measuring cases run in processes of their own
    return out


def load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
