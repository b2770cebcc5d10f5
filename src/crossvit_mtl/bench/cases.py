"""What a bench measures: the cases (model, size, precision, batch, variant, allocator), their
results, and how they are planned and named."""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

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


def model_label(spec: str) -> str:
    name, overrides = parse_model(spec)
    return name + (f" ({', '.join(f'{k}={v}' for k, v in overrides.items())})" if overrides else "")


def variant_label(variant: str, system_malloc: bool) -> str:
    return variant + (", system malloc" if system_malloc else "")


def describe(case: Case) -> str:
    return (f"{model_label(case.model)} {case.size[0]}x{case.size[1]} {case.precision} "
            f"b{case.batch_size} {variant_label(case.variant, case.system_malloc)}")
