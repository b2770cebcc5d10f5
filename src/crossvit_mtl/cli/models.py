"""`crossvit-mtl models`: the zoo table (parameters and forward GFLOPs per preset)."""
from __future__ import annotations

import argparse

from crossvit_mtl.cli.args import parse_size


def zoo_rows(size: tuple[int, int], pattern: str = "*") -> list[dict]:
    import torch

    from crossvit_mtl.models import PRESETS, create_model, list_models
    from crossvit_mtl.models.flops import count_flops

    rows = []
    for name in list_models(pattern):
        with torch.device("meta"):  # sizes and FLOPs from shapes alone: no weights drawn, nothing computed
            model = create_model(name)
        preset = PRESETS[name]
        outputs = preset.get("tasks") or {"classification" if preset["arch"] == "crossvit"
                                          else "segmentation": preset["num_classes"]}
        rows.append({
            "name": name,
            "outputs": ", ".join(f"{t}:{c}" for t, c in outputs.items()),
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "gflops": count_flops(model, size) / 1e9,
        })
    return rows


def format_table(rows: list[dict], size: tuple[int, int]) -> str:
    lines = [f"| model | outputs | params (M) | GFLOPs fwd @ {size[0]}x{size[1]} |",
             "|---|---|---:|---:|"]
    lines += [f"| {r['name']} | {r['outputs']} | {r['params_m']:.2f} | {r['gflops']:.2f} |" for r in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    print(format_table(zoo_rows(args.size, args.pattern), args.size))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the model zoo with parameters and GFLOPs",
                       description="Print the model zoo as a markdown table: parameters and "
                       "forward GFLOPs per image (torch.utils.flop_counter).")
    p.add_argument("--size", type=parse_size, metavar="HxW", default=(128, 256), help="input HxW (default 128x256)")
    p.add_argument("--pattern", default="*", help="shell-style filter on preset names")
    p.set_defaults(func=run)
