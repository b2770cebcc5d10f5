"""`crossvit-mtl demo`: the main job of the quick start.

Writes the built-in synthetic scenes once (``data/synth``), trains the demo config on them in a
new run folder, evaluates the checkpoint its rule picks (``checkpoint_selection``: the last weights),
and says where everything is.
"""
from __future__ import annotations

import argparse
import shlex
import time
from importlib import resources
from pathlib import Path

DEMO_CONFIG = "demo.yaml"


def config_path(name: str) -> Path:
    """A config shipped inside the package (the repository's `configs/` folder)."""
    return Path(str(resources.files("crossvit_mtl") / "configs" / name))


def ensure_synth(root: Path, train: int, val: int, test: int, workers: int, size: tuple[int, int]) -> None:
    """Render the scenes into ``root`` unless a cache of this version is there; synthetic scenes
    cached by an older version of the format or of the renderer are rendered again, anything else is left alone
    (a cache of another image size is refused: the recipe's time and figures are for ``size``)."""
    import json

    from crossvit_mtl.cli.args import named, output_path
    from crossvit_mtl.data.cache import FORMAT, FORMAT_VERSION, read_meta
    from crossvit_mtl.data.errors import DataError
    from crossvit_mtl.data.synth import write_synth
    from crossvit_mtl.data.synth.dataset import RENDERER

    overwrite = False
    if (root / "meta.json").exists():
        try:
            meta = read_meta(root)
            if tuple(meta["image_size"]) != tuple(size):
                have = "x".join(map(str, meta["image_size"]))
                raise named("--data", f"{root}: holds {have} scenes, the demo trains at {size[0]}x{size[1]}; "
                                      f"choose another --data or pass --size {have}")
            renderer = (meta.get("extra") or {}).get("renderer", 1)
            if meta.get("name") != "synth" or renderer == RENDERER:
                print(f"using the synthetic scenes in {root}")
                return
            print(f"{root} holds scenes of renderer version {renderer}; rendering them again in version {RENDERER}")
            overwrite = True
        except DataError as err:
            try:
                meta = json.loads((root / "meta.json").read_text())
            except (OSError, ValueError):
                meta = None
            older = (isinstance(meta, dict) and meta.get("format") == FORMAT and meta.get("name") == "synth"
                     and meta.get("version") != FORMAT_VERSION)
            if not older:
                raise named("--data", err) from None
            print(f"{root} holds synthetic scenes of cache format version {meta['version']}; "
                  f"rendering them again in version {FORMAT_VERSION}")
            overwrite = True
    else:  # never written over if it holds anything
        output_path("--data", root, folder=True, overwrite=False, hint="not a cache of scenes; choose another --data")
    start = time.perf_counter()
    write_synth(root, train=train, val=val, test=test, height=size[0], width=size[1], workers=workers,
                overwrite=overwrite, progress=True)
    print(f"wrote {train} + {val} + {test} synthetic scenes (train, val, test) at {size[0]}x{size[1]} to {root} "
          f"in {time.perf_counter() - start:.0f} s")


def write_examples(datamodule, out: Path, count: int = 4) -> list[Path]:
    """A few validation images as PNG files, so the printed predict command runs as it is."""
    import numpy as np
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    dataset = datamodule.dataset(datamodule.hparams.val_split)
    paths = []
    for i in range(min(count, len(dataset))):
        image = np.asarray(dataset.load(i)["image"])
        if image.dtype != np.uint8:
            image = (image.clip(0, 1) * 255).round().astype(np.uint8)
        paths.append(out / f"val_{i:03d}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def run(args: argparse.Namespace) -> int:
    from crossvit_mtl.cli.args import output_path, own_command
    from crossvit_mtl.cli.train import CrossViTCLI, cli_kwargs, test_best

    start = time.perf_counter()
    run_dir = output_path("--run_dir", args.run_dir or time.strftime("runs/demo-%Y%m%d-%H%M%S"), folder=True,
                          overwrite=False, hint="choose another --run_dir")
    data = Path(args.data)
    ensure_synth(data, args.train, args.val, args.test, args.workers, args.size)
    cli_args = ["--config", str(config_path(DEMO_CONFIG)), "--data.root", str(data),
                "--run_dir", str(run_dir), *args.overrides]
    cli = CrossViTCLI(**cli_kwargs(), args=cli_args, run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    test_best(cli.trainer, cli.model, cli.datamodule, cli.config.checkpoint_selection)
    best = run_dir / "checkpoints" / "best.ckpt"
    examples = write_examples(cli.datamodule, run_dir / "examples")
    minutes = (time.perf_counter() - start) / 60
    print(f"\ndemo finished in {minutes:.1f} min. Run folder: {run_dir.resolve()}")
    print(f"  checkpoint: {best}\n  metrics:    {run_dir / 'metrics_test.json'}\n  plots:      {run_dir / 'plots'}")
    print(f"predict with (on {len(examples)} validation images saved as PNG; any image works):\n"
          f"  {own_command()} predict --checkpoint {shlex.quote(str(best))} "
          f"--input {shlex.quote(str(run_dir / 'examples'))} --out {shlex.quote(str(run_dir / 'predictions'))}")
    return 0


def add_parser(sub) -> None:
    from crossvit_mtl.cli.args import parse_size

    p = sub.add_parser("demo", help="train and evaluate on the built-in synthetic scenes",
                       description="The quick-start job: write the synthetic scenes if absent, train "
                       "the demo config, evaluate its last weights on the test split, print the metric table.")
    p.add_argument("--data", default="data/synth96", help="cache folder of the synthetic scenes")
    p.add_argument("--size", type=parse_size, default=(96, 192),
                   help="HxW of the scenes to render (default 96x192, the size the demo config is timed at)")
    p.add_argument("--train", type=int, default=2000, help="training scenes to write if absent")
    p.add_argument("--val", type=int, default=252, help="validation scenes to write if absent")
    p.add_argument("--test", type=int, default=252, help="test scenes (reported) to write if absent")
    p.add_argument("--workers", type=int, default=2, help="rendering processes")
    p.add_argument("--run_dir", default=None, help="run folder (default: runs/demo-<time>)")
    p.set_defaults(func=run, takes_overrides=True)
    p.epilog = "Any other option is a config override in the fit command's syntax, e.g. --trainer.max_epochs 2."
