"""Inference speed of `crossvit-mtl predict`'s network call, side by side: fp32, bf16 autocast,
and (with ``--compile``) bf16 through torch.compile, on synthetic validation scenes; with a
checkpoint, how often the bf16 labels agree with the fp32 ones there.

    python benchmarks/predict_speed.py --checkpoint RUN/checkpoints/best.ckpt [--scenes 64] [--compile]
    python benchmarks/predict_speed.py --model crossvit_mtl_small          # random weights

The ways take turns (``--rounds``), each timing ``--runs`` batches after one warm-up batch, so
load from other jobs falls on all alike; the report gives each way's median batch time. The
compile time is that of the first batch.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from crossvit_mtl.cli.predict import make_forward
from crossvit_mtl.engine.host_memory import keep_host_memory


def load(args) -> tuple[torch.nn.Module, tuple[int, int]]:
    if args.checkpoint:
        from crossvit_mtl.engine.checkpoint import model_from_checkpoint

        model, meta = model_from_checkpoint(args.checkpoint)
        return model, tuple(meta["image_size"])
    from crossvit_mtl.engine.benchmark import build_model

    size = tuple(args.size)
    return build_model(args.model, size).eval(), size


def scenes(count: int, size: tuple[int, int]) -> torch.Tensor:
    """The first ``count`` synthetic validation scenes at ``size``, normalised as evaluation does."""
    from crossvit_mtl.data.registry import build_dataset
    from crossvit_mtl.data.transforms import build_transforms

    data = build_dataset("synth", None, "val", length=count, height=size[0], width=size[1])
    data.transform = build_transforms(data.info, train=False)
    return torch.stack([data[i]["image"] for i in range(count)])


def main() -> None:
    keep_host_memory()  # as the CLI does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a training checkpoint (else --model with random weights)")
    parser.add_argument("--model", default="crossvit_mtl_small")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 256), help="--model's input H W")
    parser.add_argument("--scenes", type=int, default=64, help="synthetic validation scenes to predict")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--runs", type=int, default=8, help="timed batches per way and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time bf16 through torch.compile")
    args = parser.parse_args()

    model, size = load(args)
    images = scenes(args.scenes, size)
    batches = images.split(args.batch_size)
    ways = {"fp32": make_forward(model, "fp32"), "bf16": make_forward(model, "bf16")}
    first_s = {}
    if args.compile:
        ways["bf16 compiled"] = make_forward(torch.compile(model, dynamic=False), "bf16", args.batch_size)
        start = time.perf_counter()
        ways["bf16 compiled"](batches[0])
        first_s["bf16 compiled"] = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, forward in ways.items():
            forward(batches[0])
            for i in range(args.runs):
                start = time.perf_counter()
                forward(batches[i % len(batches)])
                times[name].append(time.perf_counter() - start)
    source = args.checkpoint or f"{args.model} (random weights)"
    print(f"{source}, {size[0]}x{size[1]}, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"{args.rounds} x {args.runs} batches per way")
    base = statistics.median(times["fp32"])
    for name, values in times.items():
        median = statistics.median(values)
        extra = f", first batch (compiling) {first_s[name]:.1f} s" if name in first_s else ""
        print(f"  {name:14s} {median * 1e3:8.1f} ms/batch  {args.batch_size / median:7.1f} img/s  "
              f"{base / median:5.2f}x fp32{extra}")
    if args.checkpoint:  # random weights give near-ties everywhere: no agreement to speak of
        agree = []
        for batch in batches:
            full, half = ways["fp32"](batch), ways["bf16"](batch)
            if "segmentation" in full:
                agree.append((full["segmentation"].argmax(1) == half["segmentation"].argmax(1)).float().flatten())
        if agree:
            print(f"  bf16 labels equal to fp32 labels on {torch.cat(agree).mean().item():.2%} of the "
                  f"pixels of {len(images)} images")


if __name__ == "__main__":
    main()
