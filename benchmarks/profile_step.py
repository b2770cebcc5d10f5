"""Where one training step and one batch-1 forward spend their time, by kind of operator.

Profiles (PyTorch's profiler, ``crossvit_mtl.bench.profile``) crossvit_seg_small and
SegFormer-B0 at 128x256 and the quick start's network (crossvit_mtl_tiny as configs/demo.yaml
sets it) at 96x192, batch 8, in the bench's training step (forward, loss, backward, the
project's AdamW) and batch-1 inference, all in one process, and prints the share of each
category as markdown (the table in docs/speed.md).

    python benchmarks/profile_step.py [--precision auto] [--steps 5] [--threads N] [--out profile.json]
"""
from __future__ import annotations

import argparse
import json

import torch

from crossvit_mtl.bench.cases import Case, model_label
from crossvit_mtl.bench.measure import load_average, prepare
from crossvit_mtl.bench.profile import CATEGORIES, profile_calls, shares
from crossvit_mtl.engine.host_memory import keep_host_memory
from crossvit_mtl.engine.precision import PRECISIONS, resolve

QUICK_START = "crossvit_mtl_tiny:refine_heads=True,detail_channels=64,detail_depth=2"
MODELS = (("crossvit_seg_small", (128, 256)), (QUICK_START, (96, 192)), ("segformer_b0", (128, 256)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--steps", type=int, default=5, help="profiled training steps (and 4x as many forwards)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="also write the figures as JSON")
    args = parser.parse_args()
    kept = keep_host_memory()
    precision = resolve("cpu", args.precision).precision
    rows = []
    for spec, size in MODELS:
        case = Case(spec, size, precision, args.batch_size, threads=args.threads)
        work = prepare(case)
        work.model.train()
        train = profile_calls(work.train_step, args.steps)
        work.model.eval()
        infer = profile_calls(work.infer, 4 * args.steps)
        rows.append({"model": spec, "size": size, "train": train, "infer": infer})
        print(f"{model_label(spec)} {size[0]}x{size[1]}: step {train['plain_ms']:.0f} ms "
              f"({train['ops_per_call']:.0f} operators), batch-1 {infer['plain_ms']:.1f} ms "
              f"({infer['ops_per_call']:.0f} operators)", flush=True)

    head = " | ".join(f"{model_label(r['model']).split(' (')[0]} {what}" for r in rows for what in ("step", "b1"))
    lines = [f"| category | {head} |", "|---|" + "---:|" * (2 * len(rows))]
    for category in CATEGORIES:
        cells = [f"{100 * shares(r[what]['categories_us'])[category]:.1f}" for r in rows for what in ("train", "infer")]
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    lines.append("| time (ms, unprofiled) | " + " | ".join(
        f"{r[what]['plain_ms']:.1f}" for r in rows for what in ("train", "infer")) + " |")
    lines.append("| operators per call | " + " | ".join(
        f"{r[what]['ops_per_call']:.0f}" for r in rows for what in ("train", "infer")) + " |")
    print("\n" + "\n".join(lines))
    print(f"\n{precision}, batch {args.batch_size} for steps (b1: batch 1, inference), {torch.get_num_threads()} "
          f"threads, host memory {'kept' if kept else 'as the system allocator has it'}, "
          f"load {load_average()}; % of profiled wall time")
    for r in rows:
        top = ", ".join(f"{k.removeprefix('aten::')} {v / 1e3:.1f}" for k, v in list(r["train"]["top_ops_us"].items())[:8])
        print(f"- {model_label(r['model'])} step, largest operators (ms): {top}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"precision": precision, "threads": torch.get_num_threads(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
