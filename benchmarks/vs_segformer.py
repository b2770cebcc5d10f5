"""crossvit_seg_small against SegFormer-B0 in a plain user loop, side by side in one process.

Every network is built as a library user builds it (``crossvit_mtl.create_model(name)``;
SegFormer-B0 from transformers' config with random weights, its 1/4-resolution logits upsampled
to the input) and trained as a user trains it: ``torch.optim.AdamW(model.parameters())`` with
PyTorch's defaults, the tasks' losses summed, bf16 autocast where the CPU multiplies bf16
natively; no allocator setting. The networks take turns, a few training steps each per round,
the order rotating every round, so load from other jobs falls on all of them alike; batch-1
inference alternates the same way. Ratios are medians over rounds of the ratio within a round.

Beside the ratios: each network's share of the matrix-product peak, the peak measured in the
same run (best of torch.mm and a oneDNN 1x1 convolution, ``crossvit_mtl.bench.machine_peaks``)
and the FLOPs of a training step counted by PyTorch's counter; and the memory the kernel pages in
afresh at each training step (minor page faults), the cost glibc's allocator puts on a loop that
does not keep freed host memory.

    python benchmarks/vs_segformer.py [--rounds 15] [--steps 1] [--precision auto] [--out vs.json]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch

import crossvit_mtl
from crossvit_mtl.bench import PEER, SegformerDense, machine_peaks, parse_model, synthetic_batch
from crossvit_mtl.bench.measure import load_average
from crossvit_mtl.engine.precision import PRECISIONS, resolve
from crossvit_mtl.models.flops import count_flops
from crossvit_mtl.tasks import get_task

QUICK_START = "crossvit_mtl_tiny:refine_heads=True,detail_channels=64,detail_depth=2@96x192"
DEFAULT_MODELS = ("crossvit_seg_small", PEER, "crossvit_mtl_small", QUICK_START)
OURS = "crossvit_seg_small"


class Contestant:
    """One network in a plain loop: its optimiser, a fixed batch with targets, and two timers."""

    def __init__(self, spec: str, batch_size: int, placement):
        self.spec = spec
        name_part, _, size_part = spec.partition("@")
        self.size = tuple(int(v) for v in size_part.split("x")) if size_part else (128, 256)
        name, overrides = parse_model(name_part)
        torch.manual_seed(0)
        self.model = SegformerDense(**overrides) if name == PEER else crossvit_mtl.create_model(
            name, img_size=self.size, **overrides)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.05)
        self.images, self.targets = synthetic_batch(self.model, self.size, batch_size)
        self.losses = {t: get_task(t).build_loss() for t in self.targets}
        self.placement = placement
        self.gflops_train = count_flops(self.model, self.size, backward=True) / 1e9
        self.train_img_s: list[float] = []
        self.latency_ms: list[float] = []
        self.faulted_mib: list[float] = []  # fresh pages the kernel handed over, a training step

    def train(self, steps: int) -> float:
        self.model.train()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        for _ in range(steps):
            self.optimizer.zero_grad(set_to_none=True)
            with self.placement.autocast():
                outputs = self.model(self.images)
            sum(self.losses[t](outputs[t], self.targets[t]) for t in self.losses).backward()
            self.optimizer.step()
        rate = steps * self.images.shape[0] / (time.perf_counter() - start)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        self.faulted_mib.append(faults * resource.getpagesize() / 2**20 / steps)
        self.train_img_s.append(rate)
        return rate

    def infer(self, runs: int) -> float:
        self.model.eval()
        single = self.images[:1]
        start = time.perf_counter()
        for _ in range(runs):
            with torch.inference_mode(), self.placement.autocast():
                self.model(single)
        ms = 1e3 * (time.perf_counter() - start) / runs
        self.latency_ms.append(ms)
        return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                        help="presets (name:key=value,...@HxW) and segformer_b0; the first two are compared")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=1, help="training steps per network per round")
    parser.add_argument("--latency-runs", type=int, default=3, help="batch-1 forwards per network per round")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--out", default=None, help="also write the figures as JSON")
    args = parser.parse_args()
    placement = resolve("cpu", args.precision)
    load_before = load_average()
    peaks_start = machine_peaks()
    runners = [Contestant(spec, args.batch_size, placement) for spec in args.models]
    for runner in runners:  # warm-up: first calls allocate and pick kernels
        runner.train(2)
        runner.infer(2)
        runner.train_img_s.clear()
        runner.latency_ms.clear()
        runner.faulted_mib.clear()
    for i in range(args.rounds):
        order = runners[i % len(runners):] + runners[:i % len(runners)]
        for runner in order:
            runner.train(args.steps)
        for runner in order:
            runner.infer(args.latency_runs)
        print(f"round {i + 1}: " + ", ".join(f"{r.spec} {r.train_img_s[-1]:.1f} img/s {r.latency_ms[-1]:.1f} ms"
                                             for r in runners), flush=True)
    peaks_end = machine_peaks()
    peak = max(peaks_start[placement.precision], peaks_end[placement.precision])

    lines = ["| network | size | train img/s (median) | batch-1 ms (median) | GFLOPs per training image "
             f"| % of {placement.precision} matmul peak | MiB page-faulted a training step |",
             "|---|---|---:|---:|---:|---:|---:|"]
    rows = {}
    for r in runners:
        img_s, ms = statistics.median(r.train_img_s), statistics.median(r.latency_ms)
        faulted = statistics.median(r.faulted_mib)
        share = 100 * r.gflops_train * img_s / (peak * 1e3)
        rows[r.spec] = {"train_img_s": img_s, "latency_ms": ms, "gflops_train": r.gflops_train,
                        "percent_of_peak": share, "faulted_mib_per_step": faulted,
                        "train_img_s_rounds": r.train_img_s, "latency_ms_rounds": r.latency_ms}
        lines.append(f"| {r.spec.split('@')[0]} | {r.size[0]}x{r.size[1]} | {img_s:.2f} | {ms:.1f} "
                     f"| {r.gflops_train:.2f} | {share:.1f} | {faulted:.1f} |")
    ours, peer = runners[0], runners[1]
    train_ratio = statistics.median(a / b for a, b in zip(ours.train_img_s, peer.train_img_s))
    latency_ratio = statistics.median(b / a for a, b in zip(ours.latency_ms, peer.latency_ms))
    print("\n" + "\n".join(lines))
    print(f"\n{ours.spec} over {peer.spec}, median of {args.rounds} per-round ratios: training images/s "
          f"{train_ratio:.2f}x, batch-1 speed (1/latency) {latency_ratio:.2f}x")
    print(f"{placement.precision} ({placement.reason}); batch {args.batch_size}, {args.steps} step(s) and "
          f"{args.latency_runs} batch-1 forwards per network per round; {torch.get_num_threads()} threads; "
          f"matmul peak {peaks_start[placement.precision]:.3f} / {peaks_end[placement.precision]:.3f} TFLOP/s "
          f"(start / end); load {load_before} before, {load_average()} after; torch {torch.__version__}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"precision": placement.precision, "peaks_start": peaks_start, "peaks_end": peaks_end,
                       "rows": rows, "train_ratio": train_ratio, "latency_ratio": latency_ratio,
                       "rounds": args.rounds, "steps": args.steps, "threads": torch.get_num_threads()}, f, indent=2)


if __name__ == "__main__":
    main()
