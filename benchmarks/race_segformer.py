"""Race: crossvit_seg_small against SegFormer-B0 (HF transformers), same wall-clock budget.

Both train on the built-in synthetic scenes with the same data order, augmentation, loss (the
project's cross-entropy; SegFormer's 1/4-resolution logits upsampled to full size), optimiser
(AdamW, weight decay 0.05 off norms and biases, linear warm-up then cosine over the budget),
precision and batch size. Validation mIoU is taken every ``--eval-every`` seconds of training
and at the end; evaluation time does not count against the budget.

The two models train in alternating time slices (``--slice`` seconds) rather than one after the
other, so load from other jobs on a shared machine falls on both alike.

    crossvit-mtl data synth --out CACHE --train 2000 --val 200   # optional: else rendered on demand
    python benchmarks/race_segformer.py --root CACHE [--minutes 5] [--device cuda] [--out race.json]

On CUDA, batches come from pinned memory without blocking, and the clock reads after the GPU
has finished each step.
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from crossvit_mtl.bench import build_model
from crossvit_mtl.data.registry import build_dataset
from crossvit_mtl.data.transforms import build_transforms
from crossvit_mtl.engine.host_memory import keep_host_memory
from crossvit_mtl.engine.optim import build_optimizer, warmup_cosine
from crossvit_mtl.engine.precision import DEVICES, PRECISIONS, resolve
from crossvit_mtl.metrics import SegmentationMetric
from crossvit_mtl.tasks import get_task

SCHEDULE_STEPS = 1000  # the budget's time fraction is mapped onto this many schedule steps


@dataclass
class Runner:
    """One contestant: its model, optimiser, data stream, training clock and curve."""

    name: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    batches: Iterator | None = None
    train_s: float = 0.0
    images: int = 0
    steps: int = 0
    next_eval: float = 0.0
    curve: list[dict] = field(default_factory=list)

    def next_batch(self) -> dict:
        if self.batches is None:
            self.batches = iter(self.loader)
        try:
            return next(self.batches)
        except StopIteration:  # a new epoch, reshuffled
            self.batches = iter(self.loader)
            return next(self.batches)


def datasets(root: str | None, size: int, val_size: int):
    options = {"tasks": ["segmentation"]} if root else {}
    train = build_dataset("synth", root, "train", **options, **({} if root else {"length": size}))
    val = build_dataset("synth", root, "val", **options, **({} if root else {"length": val_size}))
    train.transform = build_transforms(train.info, train=True)
    val.transform = build_transforms(val.info, train=False)
    return train, val


@torch.inference_mode()
def evaluate(model: torch.nn.Module, loader: DataLoader, num_classes: int, placement) -> dict:
    model.eval()
    metric = SegmentationMetric(num_classes).to(placement.device)
    for batch in loader:
        with placement.autocast():
            logits = model(batch["image"].to(placement.device, non_blocking=True))["segmentation"]
        metric.update(logits.float(), batch["segmentation"].to(placement.device, non_blocking=True).long())
    model.train()
    values = metric.compute()
    return {"miou": values["miou"], "pixel_acc": values["pixel_acc"]}


def main() -> None:
    keep_host_memory()  # as the CLI does; it applies to both contestants
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per model")
    parser.add_argument("--root", default=None, help="synthetic-scene cache (crossvit-mtl data synth); "
                        "default: render on demand")
    parser.add_argument("--models", nargs="+", default=["crossvit_seg_small", "segformer_b0"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=float, default=0.05, help="warm-up as a fraction of the budget")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--device", default="auto", help=f"{DEVICES} (default auto: CUDA when there is one)")
    parser.add_argument("--eval-every", type=float, default=60.0, help="seconds of training between evaluations")
    parser.add_argument("--slice", type=float, default=20.0, help="seconds each model trains per turn")
    parser.add_argument("--train-size", type=int, default=2000, help="scenes rendered on demand (no --root)")
    parser.add_argument("--val-size", type=int, default=200, help="val scenes rendered on demand (no --root)")
    parser.add_argument("--out", default="race_segformer.json")
    args = parser.parse_args()

    budget = args.minutes * 60
    try:
        placement = resolve(args.device, args.precision)
    except ValueError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    device, precision, cuda = placement.device, placement.precision, placement.device.type == "cuda"
    print(f"race on {placement}")

    def clock() -> float:  # on CUDA, once the queued work is done
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter()

    train_set, val_set = datasets(args.root, args.train_size, args.val_size)
    num_classes = train_set.info.num_classes
    size = tuple(train_set[0]["image"].shape[-2:])
    val_loader = DataLoader(val_set, batch_size=args.batch_size, pin_memory=cuda)
    criterion = get_task("segmentation").build_loss()
    schedule = warmup_cosine(SCHEDULE_STEPS, int(args.warmup * SCHEDULE_STEPS))
    runners = []
    for name in args.models:
        torch.manual_seed(0)
        spec = f"{name}{',' if ':' in name else ':'}num_classes={num_classes}"
        model = build_model(spec, size).to(device)
        loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True, pin_memory=cuda,
                            generator=torch.Generator().manual_seed(0))  # same data order for all
        runners.append(Runner(name, model.train(), build_optimizer(model, "adamw", args.lr, 0.05), loader))
    print(f"race: {', '.join(args.models)}; {args.minutes} min each at {size[0]}x{size[1]}, batch "
          f"{args.batch_size}, {precision}, AdamW lr {args.lr}, {torch.get_num_threads()} threads")

    def record(runner: Runner) -> None:
        point = {"time_s": round(runner.train_s, 1), "images": runner.images, "steps": runner.steps,
                 **evaluate(runner.model, val_loader, num_classes, placement)}
        runner.curve.append(point)
        print(f"  {runner.name}: {point['time_s']:7.1f} s {point['images']:7d} images  "
              f"mIoU {100 * point['miou']:.2f}  pixel acc {100 * point['pixel_acc']:.2f}", flush=True)

    for runner in runners:
        record(runner)  # the untrained start
        runner.next_eval = args.eval_every
    while any(r.train_s < budget for r in runners):
        for runner in runners:
            turn_end = min(runner.train_s + args.slice, budget)
            while runner.train_s < turn_end:
                start = clock()
                for group in runner.optimizer.param_groups:
                    group["lr"] = args.lr * schedule(int(runner.train_s / budget * SCHEDULE_STEPS))
                batch = runner.next_batch()
                image, labels = (batch[k].to(device, non_blocking=True) for k in ("image", "segmentation"))
                runner.optimizer.zero_grad(set_to_none=True)
                with placement.autocast():
                    # training batches hand the image over in float16 (DatasetInfo)
                    logits = runner.model(image.float())["segmentation"]
                criterion(logits, labels.long()).backward()
                runner.optimizer.step()
                runner.train_s += clock() - start
                runner.images += image.shape[0]
                runner.steps += 1
                if runner.train_s >= runner.next_eval and runner.train_s < budget:
                    record(runner)
                    runner.next_eval += args.eval_every
    for runner in runners:
        record(runner)

    print("\n| model | time s | images | mIoU % | pixel acc % |\n|---|---:|---:|---:|---:|")
    for runner in runners:
        for p in runner.curve:
            print(f"| {runner.name} | {p['time_s']:.0f} | {p['images']} | {100 * p['miou']:.2f} "
                  f"| {100 * p['pixel_acc']:.2f} |")
    report = {"minutes": args.minutes, "batch_size": args.batch_size, "lr": args.lr,
              "precision": precision, "device": str(device), "device_name": placement.name, "size": size,
              "root": args.root, "threads": torch.get_num_threads(),
              "curves": {r.name: r.curve for r in runners},
              "images_per_s": {r.name: r.images / max(r.train_s, 1e-9) for r in runners}}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    for name, rate in report["images_per_s"].items():
        print(f"{name}: {rate:.2f} training images/s over the race")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
