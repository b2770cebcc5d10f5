"""`crossvit-mtl export`: a trained model as safetensors weights, an ONNX graph or TorchScript."""
from __future__ import annotations

import argparse

from crossvit_mtl.cli.args import UserError, checked_size
from crossvit_mtl.engine.precision import DEVICES, resolve

FORMATS = ("onnx", "safetensors", "torchscript")


def parse_option(text: str) -> tuple[str, object]:
    """'k=v' with a YAML value: ``img_size=[96,192]``, ``fusion=cls``, ``num_classes=10``."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"model option must look like key=value, got {text!r}")
    return key, yaml.safe_load(value)


def load_model(args: argparse.Namespace):
    """The network and its data-set description (None for a preset) from the chosen source."""
    from crossvit_mtl.cli.args import input_file, named
    from crossvit_mtl.models import create_model, model_from_checkpoint
    from crossvit_mtl.models.pretrained import hub_repo
    from crossvit_mtl.serialization import CheckpointError

    if args.checkpoint:
        try:
            return model_from_checkpoint(input_file("--checkpoint", args.checkpoint))
        except CheckpointError as err:
            raise named("--checkpoint", err) from None
    weights = args.weights if not args.weights or hub_repo(args.weights) else input_file("--weights", args.weights)
    try:
        model = create_model(args.model, weights=weights, **dict(args.model_option))
    except CheckpointError as err:  # the weights (a ValueError too): named after their argument
        raise named("--weights", err) from None
    except ValueError as err:
        raise UserError(str(err)) from None
    return model.eval(), None


def input_size(model, meta: dict | None, size: tuple[int, int] | None) -> tuple[int, int]:
    """--size, else the training size, else the size the preset was created for."""
    height, width = size or (meta or {}).get("image_size") or model.encoder.img_size
    return int(height), int(width)


def run(args: argparse.Namespace) -> int:
    from crossvit_mtl.cli.args import output_path
    from crossvit_mtl.export import check_onnx, export_onnx, export_torchscript, save_weights

    out = output_path("--out", args.out, folder=False, overwrite=args.overwrite)
    if args.checkpoint and (args.model or args.weights or args.model_option):
        raise UserError("--checkpoint already names the model; drop --model/--weights/--model_option")
    if not args.checkpoint and not args.model:
        raise UserError("name the model: --checkpoint CKPT, or --model PRESET [--weights FILE|NAME]")
    try:
        placement = resolve(args.device, "fp32")
    except ValueError as err:
        raise UserError(str(err)) from None
    model, meta = load_model(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.format == "safetensors":
        save_weights(model, out, meta)
        print(f"wrote {out}; load it with crossvit_mtl.export.model_from_weights({str(out)!r})")
        return 0
    size = checked_size(model, input_size(model, meta, args.size))
    print(f"export: traced on {placement.device} ({placement.name}) in fp32, the weights' precision")
    model.to(placement.device)
    if args.format == "torchscript":
        tasks = export_torchscript(model, out, size)
        print(f"wrote {out} (TorchScript, input fixed at {size[0]}x{size[1]}, outputs: {', '.join(tasks)})")
        return 0
    tasks = export_onnx(model, out, size, args.opset)
    print(f"wrote {out} (ONNX opset {args.opset}, input 'image' Bx3x{size[0]}x{size[1]}, "
          f"outputs: {', '.join(tasks)})")
    if args.check:  # onnxruntime runs on the CPU: PyTorch's reference does too
        diffs = check_onnx(model.cpu(), out, size)
        worst = max(diffs.values())
        print("onnxruntime vs PyTorch, max abs difference: "
              + ", ".join(f"{t} {d:.2e}" for t, d in diffs.items()))
        if worst > args.tolerance:
            raise UserError(f"ONNX outputs differ from PyTorch by {worst:.2e} > {args.tolerance:g}")
    return 0


#: the ONNX opsets export writes: 14 is the first with attention's operators, 20 the newest torch's
#: TorchScript exporter writes
OPSETS = (14, 20)


def add_parser(sub) -> None:
    from crossvit_mtl.cli.args import Device, Integer, Number, add_flag, parse_size

    p = sub.add_parser("export", help="export a model as safetensors, ONNX or TorchScript",
                       description="Export a training checkpoint (or a preset with weights from "
                       "elsewhere). safetensors: every tensor plus the preset name, its options and "
                       "the data set's description in the file's metadata. onnx: input 'image' "
                       "(dynamic batch), one output per task, verified in onnxruntime. torchscript: "
                       "traced, so the input height and width are fixed at --size.")
    p.add_argument("--checkpoint", help="a .ckpt written by `crossvit-mtl fit`")
    p.add_argument("--model", help="a preset name (`crossvit-mtl models`), instead of --checkpoint")
    p.add_argument("--weights", help="with --model: weights to load into it (.safetensors, a checkpoint, "
                   "a published CrossViT file, or a release by name through the Hugging Face cache: "
                   "crossvit_15_dagger_408.in1k, hf-hub:timm/crossvit_15_dagger_408.in1k)")
    p.add_argument("--model_option", type=parse_option, action="append", default=[], metavar="KEY=VALUE",
                   help="with --model: a preset override, e.g. num_classes=10 (repeatable)")
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--size", type=parse_size, metavar="HxW", default=None,
                   help="input HxW for onnx/torchscript (default: training size, else the preset's)")
    p.add_argument("--device", type=Device(), default="auto",
                   help=f"where onnx/torchscript trace the model: {DEVICES} (default auto: CUDA when "
                   "there is one); the onnxruntime check runs on the CPU")
    p.add_argument("--opset", type=Integer(*OPSETS), default=17,
                   help=f"ONNX opset, {OPSETS[0]} (the first with attention's operators) to {OPSETS[1]}")
    add_flag(p, "--check", default=True,
             help="compare onnxruntime's outputs with PyTorch's after an ONNX export (default true)")
    p.add_argument("--no_check", dest="check", action="store_false", help=argparse.SUPPRESS)  # the old spelling
    p.add_argument("--tolerance", type=Number(0, 1, low_open=True), default=1e-4,
                   help="max abs difference onnxruntime vs PyTorch accepted (default 1e-4)")
    add_flag(p, "--overwrite", help="replace --out if it exists")
    p.set_defaults(func=run)
