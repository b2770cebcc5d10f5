"""Inference speed of `crossvit-mtl predict`'s network call, side by side: fp32, the device's
default autocast (bf16, or fp16 on GPUs without bf16) and (with ``--compile``) that through
torch.compile, on synthetic validation scenes; with a checkpoint, how often the autocast labels
agree with the fp32 ones there. Batches go to the device as `predict` sends them (pinned,
non-blocking on CUDA) and outputs come back to the CPU, so each time includes both copies.

    python benchmarks/predict_speed.py --checkpoint RUN/checkpoints/best.ckpt [--scenes 64] [--compile]
    python benchmarks/predict_speed.py --model crossvit_mtl_small          # random weights
    python benchmarks/predict_speed.py --model crossvit_mtl_small --device cuda

The ways take turns (``--rounds``), each timing ``--runs`` batches after one warm-up batch, so
load from other jobs falls on all alike; the report gives each way's median batch time. The
compile time is that of the first batch.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from crossvit_mtl.engine.host_memory import keep_host_memory
from crossvit_mtl.engine.precision import DEVICES, resolve
from crossvit_mtl.inference import make_forward


def load(args) -> tuple[torch.nn.Module, tuple[int, int]]:
    if args.checkpoint:
        from crossvit_mtl.models import model_from_checkpoint

        model, meta = model_from_checkpoint(args.checkpoint)
        return model, tuple(meta["image_size"])
    from crossvit_mtl.bench import build_model

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
    parser.add_argument("--compile", action="store_true", help="also time the autocast way through torch.compile")
    parser.add_argument("--device", default="auto", help=f"{DEVICES} (default auto: CUDA when there is one)")
    args = parser.parse_args()
    try:
        fast, full = resolve(args.device), resolve(args.device, "fp32")
    except ValueError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    print(f"predict_speed on {fast}")

    model, size = load(args)
    model.to(fast.device)
    images = scenes(args.scenes, size)
    batches = images.split(args.batch_size)
    half = fast.precision  # the device's default: bf16, fp16, or fp32 where it has neither
    ways = {"fp32": make_forward(model, full), half: make_forward(model, fast)}
    first_s = {}
    if args.compile:
        compiled = f"{half} compiled"
        ways[compiled] = make_forward(torch.compile(model, dynamic=False), fast, args.batch_size)
        start = time.perf_counter()
        ways[compiled](batches[0])
        first_s[compiled] = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, forward in ways.items():
            forward(batches[0])
            for i in range(args.runs):
                start = time.perf_counter()
                forward(batches[i % len(batches)])
                times[name].append(time.perf_counter() - start)
    source = args.checkpoint or f"{args.model} (random weights)"
    print(f"{source}, {size[0]}x{size[1]}, batch {args.batch_size}, {fast.device} ({fast.name}), "
          f"{torch.get_num_threads()} threads, "
          f"{args.rounds} x {args.runs} batches per way")
    base = statistics.median(times["fp32"])
    for name, values in times.items():
        median = statistics.median(values)
        extra = f", first batch (compiling) {first_s[name]:.1f} s" if name in first_s else ""
        print(f"  {name:14s} {median * 1e3:8.1f} ms/batch  {args.batch_size / median:7.1f} img/s  "
              f"{base / median:5.2f}x fp32{extra}")
    if args.checkpoint and half != "fp32":  # random weights give near-ties everywhere: no agreement to speak of
        agree = []
        for batch in batches:
            exact, rounded = ways["fp32"](batch), ways[half](batch)
            if "segmentation" in exact:
                agree.append((exact["segmentation"].argmax(1) == rounded["segmentation"].argmax(1)).float().flatten())
        if agree:
            print(f"  {half} labels equal to fp32 labels on {torch.cat(agree).mean().item():.2%} of the "
                  f"pixels of {len(images)} images")


if __name__ == "__main__":
    main()
