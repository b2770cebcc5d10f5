"""`crossvit-mtl demo`: the main job of the quick start.

Writes the built-in synthetic scenes once (``data.root`` of the demo config, ``data/synth96``),
trains the demo config on them in a new run folder, evaluates the checkpoint its rule picks
(``checkpoint_selection``: the last weights), and says where everything is. Its options are
fit's (Lightning's parser: any config key can be overridden) and the scenes' own (``--size``,
``--train``, ``--val``, ``--test``, ``--workers``).
"""
from __future__ import annotations

import shlex
import time
from importlib import resources
from pathlib import Path

from crossvit_mtl.cli.args import Integer, Size, UserError, named, output_path, own_command, print_error
from crossvit_mtl.cli.train import CrossViTCLI, SaveRunConfig, cli_kwargs, lightning_errors, test_best

DEMO_CONFIG = "demo.yaml"
#: the demo's options beside fit's, left out of the run's config.yaml (a fit config)
SCENE_OPTIONS = ("size", "train", "val", "test", "workers")
#: the most scenes of a split the demo writes
MAX_SCENES = 1_000_000


def config_path(name: str) -> Path:
    """A config shipped inside the package (the repository's `configs/` folder)."""
    return Path(str(resources.files("crossvit_mtl") / "configs" / name))


def ensure_synth(root: Path, train: int, val: int, test: int, workers: int, size: tuple[int, int]) -> None:
    """Render the scenes into ``root`` unless a cache of this version is there; synthetic scenes
    cached by an older version of the format or of the renderer are rendered again, anything else is left alone
    (a cache of another image size is refused: the recipe's time and figures are for ``size``)."""
    import json

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
                raise named("--data.root", f"{root}: holds {have} scenes, the demo trains at {size[0]}x{size[1]}; "
                                           f"choose another --data.root or pass --size {have}")
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
            if not (older and isinstance(meta, dict)):
                raise named("--data.root", err) from None
            print(f"{root} holds synthetic scenes of cache format version {meta['version']}; "
                  f"rendering them again in version {FORMAT_VERSION}")
            overwrite = True
    else:  # never written over if it holds anything
        output_path("--data.root", root, folder=True, overwrite=False,
                    hint="not a cache of scenes; choose another --data.root")
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


class SaveDemoConfig(SaveRunConfig):
    """The run's config.yaml without the scenes' options: a config `fit` takes as it is."""

    def save_config(self, trainer, pl_module, stage) -> None:
        config = self.config.clone()
        for key in SCENE_OPTIONS:
            del config[key]
        self.config = config
        super().save_config(trainer, pl_module, stage)


class DemoCLI(CrossViTCLI):
    """fit's parser and classes, with the scenes' options; the scenes are written (once) and the
    run folder chosen before the data module reads them."""

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--size", type=Size(), default=(96, 192),
                            help="HxW of the scenes to render (the size the demo config is timed at)")
        parser.add_argument("--train", type=Integer(1, MAX_SCENES), default=2000,
                            help="training scenes to write if absent")
        parser.add_argument("--val", type=Integer(1, MAX_SCENES), default=252,
                            help="validation scenes (model selection) to write if absent")
        parser.add_argument("--test", type=Integer(1, MAX_SCENES), default=252,
                            help="test scenes (reported) to write if absent")
        parser.add_argument("--workers", type=Integer(1, 256), default=2, help="rendering processes")
        parser.set_defaults(run_dir=None)  # a new runs/demo-<time>

    def before_instantiate_classes(self) -> None:
        config = self.config
        config.run_dir = str(output_path("--run_dir", config.run_dir or time.strftime("runs/demo-%Y%m%d-%H%M%S"),
                                         folder=True, overwrite=False, hint="choose another --run_dir"))
        if not config.data.root:
            raise UserError("--data.root: the demo needs a folder to write its scenes into")
        ensure_synth(Path(config.data.root), config.train, config.val, config.test, config.workers, config.size)
        super().before_instantiate_classes()


def run_demo(args: list[str]) -> int:
    start = time.perf_counter()
    cli = DemoCLI.__new__(DemoCLI)
    with lightning_errors(cli):  # the demo config first: what the command line gives overrides it
        kwargs = cli_kwargs()
        kwargs.update(save_config_callback=SaveDemoConfig,
                      parser_kwargs={**kwargs["parser_kwargs"], "prog": "crossvit-mtl demo"})
        cli.__init__(**kwargs, args=["--config", str(config_path(DEMO_CONFIG)), *args], run=False)  # type: ignore[misc]
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        test_best(cli.trainer, cli.model, cli.datamodule, cli.config.checkpoint_selection)
        run_dir = Path(cli.config.run_dir)
        examples = write_examples(cli.datamodule, run_dir / "examples")
    best = run_dir / "checkpoints" / "best.ckpt"
    minutes = (time.perf_counter() - start) / 60
    print(f"\ndemo finished in {minutes:.1f} min. Run folder: {run_dir.resolve()}")
    print(f"  checkpoint: {best}\n  metrics:    {run_dir / 'metrics_test.json'}\n  plots:      {run_dir / 'plots'}")
    print(f"predict with (on {len(examples)} validation images saved as PNG; any image works):\n"
          f"  {own_command()} predict --checkpoint {shlex.quote(str(best))} "
          f"--input {shlex.quote(str(run_dir / 'examples'))} --out {shlex.quote(str(run_dir / 'predictions'))}")
    return 0


def run_command(argv: list[str]) -> int:
    """``crossvit-mtl demo ...`` as the command line runs it: the exit code, a problem in one line."""
    try:
        return run_demo(argv[1:])
    except UserError as err:
        return print_error("demo", err)


def add_parser(sub) -> None:
    # Listed for `crossvit-mtl --help`; `main` hands the demo to Lightning's parser, as fit.
    sub.add_parser("demo", help="train and evaluate on the built-in synthetic scenes (see `crossvit-mtl demo "
                   "--help`)", add_help=False)
