"""Speed of the zoo on this machine's CPU or GPU: training images/s, batch-1 latency, peak
memory, FLOPs and the fraction of the device's matrix-product peak that training reaches, with
SegFormer-B0 (HF transformers) as the peer a user would otherwise pick.

Every case (model, size, precision, batch size, variant) runs in a fresh process, so one case's
allocator state, compiled kernels and thread pools never leak into the next, and the process's
peak resident set (``resource.ru_maxrss``; on CUDA ``torch.cuda.max_memory_allocated``)
measures that case alone. Times are medians of single steps after warm-up, on CUDA between
CUDA events after synchronising; on a shared machine only ratios measured in one run mean much.
"""
from crossvit_mtl.bench.cases import (
                                      ALLOCATORS,
                                      BASE_SIZE,
                                      DEFAULT_MODELS,
                                      LARGE_SIZE_MODELS,
                                      LARGE_SIZES,
                                      PEER,
                                      THESIS_TARGET,
                                      VARIANTS,
                                      Case,
                                      Result,
                                      describe,
                                      parse_model,
                                      plan,
)
from crossvit_mtl.bench.measure import machine_peaks, matmul_peaks, measure_case, run_cases
from crossvit_mtl.bench.models import SegformerDense, build_model, synthetic_batch
from crossvit_mtl.bench.report import benchmark, make_report, summarize, write_report

__all__ = ["ALLOCATORS", "BASE_SIZE", "DEFAULT_MODELS", "LARGE_SIZES", "LARGE_SIZE_MODELS", "PEER", "THESIS_TARGET",
           "VARIANTS", "Case", "Result", "SegformerDense", "benchmark", "build_model", "describe", "machine_peaks",
           "make_report", "matmul_peaks", "measure_case", "parse_model", "plan", "run_cases", "summarize",
           "synthetic_batch", "write_report"]
