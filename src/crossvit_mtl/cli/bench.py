"""`crossvit-mtl bench`: training and inference speed of the zoo against SegFormer-B0."""
from __future__ import annotations

import argparse

from crossvit_mtl.cli.args import Device, Integer, add_flag, parse_size


def run(args: argparse.Namespace) -> int:
    from crossvit_mtl.bench import benchmark, plan
    from crossvit_mtl.cli.args import UserError
    from crossvit_mtl.engine.precision import resolve

    if args.out:
        from crossvit_mtl.cli.args import output_path

        output_path("--out", args.out, folder=True, overwrite=args.overwrite)
    repeats = args.repeats or (3 if args.quick else 5)
    try:
        placement = resolve(args.device)
        cases = plan(args.models, args.sizes, args.precision, args.batch_size, args.variants,
                     repeats=repeats, latency_runs=5 if args.quick else 15, threads=args.threads,
                     allocators=args.allocators, device=str(placement.device))
    except ValueError as err:
        raise UserError(err) from None
    print(f"bench on {placement.device} ({placement.name}); --precision auto is {placement.precision}: "
          f"{placement.reason}")
    print(f"host memory: each case in a fresh process, with --allocators {' and '.join(args.allocators)} "
          "(kept: freed blocks kept for reuse; system: glibc's allocator as it is)")
    if "segformer_b0" in args.models:
        try:
            import transformers  # noqa: F401
        except ImportError:
            raise UserError("segformer_b0 needs HF transformers: pip install 'crossvit-mtl[bench]' "
                            "(or leave it out of --models)") from None
    report = benchmark(cases, args.out, rounds=args.rounds)
    print(report["markdown"])
    if args.out:
        print(f"wrote {args.out}/bench.json and bench.md")
    return 0


def add_parser(sub) -> None:
    from crossvit_mtl.bench import ALLOCATORS, DEFAULT_MODELS, VARIANTS
    from crossvit_mtl.engine.precision import DEVICES, PRECISIONS

    p = sub.add_parser(
        "bench", help="measure training and inference speed (vs SegFormer-B0)",
        description="Training images/s (forward + loss + backward + AdamW, batch 8), batch-1 latency, "
        "peak memory, GFLOPs and the fraction of the device's matrix-product peak, per model, in "
        "the project's default precision and fp32, on the CPU or a GPU. Each case runs in a fresh "
        "process; times are medians after warm-up (on CUDA between CUDA events). Prints a markdown "
        "table; --out also writes bench.json and bench.md.")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="MODEL",
                   help="presets, with overrides as name:key=value,... ; 'segformer_b0' is the peer "
                   "(needs transformers). Default: the segmentation and multi-task zoo and the peer")
    p.add_argument("--sizes", nargs="+", type=parse_size, default=None, metavar="HxW",
                   help="input sizes for every model (default: 128x256, plus 256x512 and 512x1024 "
                   "for crossvit_seg_small and segformer_b0)")
    p.add_argument("--device", type=Device(), default="auto", help=f"{DEVICES} (default auto: CUDA when there is one)")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["auto", "fp32"],
                   help="auto = the device's default (bf16 autocast where it multiplies bf16 natively, "
                   "fp16 on GPUs without bf16); default: auto fp32")
    p.add_argument("--batch_size", nargs="+", type=Integer(1, 4096), default=[8], help="training batch sizes (default 8)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=["eager"],
                   help="run the model eager, in channels_last memory format, or torch.compile'd "
                   "(several are measured side by side)")
    p.add_argument("--allocators", nargs="+", choices=ALLOCATORS, default=["kept"],
                   help="kept = freed host memory kept for reuse (the default), system = glibc as it "
                   "is; several are measured side by side. thesis_seg:decoder_channels=128 in fp32 "
                   "always also runs with the system allocator, the baseline of its speed target")
    p.add_argument("--repeats", type=Integer(1, 1000), default=None,
                   help="timed training steps per case (default 5, quick 3)")
    p.add_argument("--threads", type=Integer(1, 1024), default=None,
                   help="torch threads per case (default: torch's). On a machine shared with other jobs, "
                   "fewer threads than cores avoid stalls at every parallel region")
    p.add_argument("--rounds", type=Integer(1, 1000), default=1,
                   help="run the whole plan this many times, its cases in turn, and report medians; the "
                   "targets' ratios are medians of ratios within a round (steadier on a shared machine)")
    add_flag(p, "--quick", help="fewer timed runs (3 training steps, 5 latency runs)")
    p.add_argument("--out", default=None, help="folder for bench.json and bench.md (new or empty, unless --overwrite)")
    add_flag(p, "--overwrite", help="write into an --out folder that already holds files")
    p.set_defaults(func=run)
