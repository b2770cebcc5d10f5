"""Malformed inputs and the one-line message each must give: the one place that lists them.

Every case writes its malformed input into ``tmp_path`` (a data file, a config, a checkpoint or a
weights file), runs the exact command through the public entry point in-process
(``crossvit_mtl.cli.main``; ``create_model`` for weights loaded from Python) and checks the exit
code (2 for errors, 1 for ``data check`` which lists problems), that the message is ONE line
(``data check``: one line per problem and a summary) and that it matches a pattern naming the
offending file, key or value. ``{tmp}`` in a command is the case's ``tmp_path``.

Longer than the project's ~400 lines per file on purpose: it is one table of cases, and keeping
them in one place is what makes it the list the docs point to.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import importlib
import io
import json
import logging
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from scipy.io import savemat

from crossvit_mtl.cli import main
from crossvit_mtl.data.synth import write_synth
from fixtures_data import (
    cityscapes_stem,
    save_label_png,
    write_cache,
    write_cityscapes,
    write_image_folder,
    write_mtan_cityscapes,
    write_mtan_nyuv2,
    write_nyud,
    write_pascal_context,
)
from fixtures_run import TINY_OPTIONS, merge, tiny_config

# The tiny run with segmentation alone on crossvit_seg_tiny, one step, nothing logged. Cases fail while
# the classes are instantiated, before any data loader or training step, unless they say otherwise.
TINY = tiny_config(model={"model": "crossvit_seg_tiny"}, data={"tasks": ["segmentation"]},
                   trainer={"max_steps": 1, "limit_train_batches": 1, "num_sanity_val_steps": 0, "logger": False})
TINY_MODEL, TINY_DATA, TINY_TRAINER = TINY["model"], TINY["data"], TINY["trainer"]

FIT = "fit --config {tmp}/config.yaml --run_dir {tmp}/run"
PAYLOAD_MARKER = "payload_ran"


# ----------------------------------------------------------------------------------- builders
def write_config(tmp: Path, model: dict | None = None, data: dict | None = None,
                 trainer: dict | None = None) -> None:
    config = {**TINY, "model": merge(TINY_MODEL, model), "data": merge(TINY_DATA, data),
              "trainer": merge(TINY_TRAINER, trainer)}
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))


def config(model: dict | None = None, data: dict | None = None, trainer: dict | None = None):
    """Builder of a config with these changes to the tiny run."""
    return lambda tmp: write_config(tmp, model, data, trainer)


def raw_config(text: str):
    """Builder of a config file written as it is (for what YAML dicts cannot express)."""
    def build(tmp: Path) -> None:
        write_config(tmp)
        (tmp / "config.yaml").write_text(text)
    return build


def mtan(damage: Callable[[Path], object], fit: dict | None = None):
    """An MTAN Cityscapes tree (16x32, 3 train / 2 val samples) damaged by ``damage``; with
    ``fit``, also a config training crossvit_mtl_tiny on it (``fit`` = changes to ``data``)."""
    def build(tmp: Path) -> None:
        root = write_mtan_cityscapes(tmp / "mtan", size=(16, 32))
        damage(root)
        if fit is not None:
            write_config(tmp, model={"model": "crossvit_mtl_tiny", "model_options": TINY_OPTIONS},
                         data={"dataset": "cityscapes_mtan", "root": str(root), "options": None, "tasks": None,
                               "test_split": "val", **fit})
    return build


def nyuv2(damage: Callable[[Path], object]):
    def build(tmp: Path) -> None:
        damage(write_mtan_nyuv2(tmp / "nyuv2"))
    return build


def benchmark(name: str, writer: Callable[[Path], Path], damage: Callable[[Path], object], fit: dict | None = None):
    """A benchmark tree (``writer`` into ``{tmp}/{name}``) damaged by ``damage``; with ``fit``, also a
    config training crossvit_mtl_tiny on it (``fit`` = changes to ``data``)."""
    def build(tmp: Path) -> None:
        root = writer(tmp / name)
        damage(root)
        if fit is not None:
            write_config(tmp, model={"model": "crossvit_mtl_tiny", "model_options": TINY_OPTIONS},
                         data={"dataset": {"pc": "pascal_context", "nyud": "nyud_v2"}[name], "root": str(root),
                               "options": None, "tasks": None, "test_split": "val", **fit})
    return build


def pascal(damage: Callable[[Path], object], fit: dict | None = None):
    return benchmark("pc", lambda root: write_pascal_context(root, size=(32, 64)), damage, fit)


def nyud(damage: Callable[[Path], object], fit: dict | None = None):
    return benchmark("nyud", lambda root: write_nyud(root, size=(32, 64)), damage, fit)


def cityscapes(damage: Callable[[Path], object]):
    def build(tmp: Path) -> None:
        damage(write_cityscapes(tmp / "cs", {"train": 2, "val": 1}))
    return build


def _cs_file(root: Path, folder: str, split: str, suffix: str, i: int = 0) -> Path:
    return root / folder / split / "aachen" / f"{cityscapes_stem(i)}_{suffix}"


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _several_problems(root: Path) -> None:
    (root / "train" / "label_7" / "2.npy").unlink()
    np.save(root / "train" / "depth" / "1.npy", np.full((16, 32), np.nan, np.float32))
    np.save(root / "val" / "label_7" / "1.npy", np.full((16, 32), 9, np.float32))
    _truncate(root / "val" / "image" / "1.npy", 150)


@functools.cache
def _trained_state(model: str, options: tuple, classes: int) -> dict:
    """A DenseTaskModule's checkpoint dict as Lightning writes it (state_dict + hyper-parameters),
    built by saving the module directly: no training needed to exercise loading."""
    from crossvit_mtl.engine.datamodule import DenseDataModule
    from crossvit_mtl.engine.module import DenseTaskModule

    meta = DenseDataModule(**TINY_DATA).meta
    meta["class_names"] = meta["class_names"][:classes]
    meta["palette"] = meta["palette"][:classes]
    meta["task_channels"] = {"segmentation": classes}
    torch.manual_seed(0)
    module = DenseTaskModule(model=model, model_options=dict(options), dataset_meta=meta)
    return {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": "2"}


#: the tiny run's model options, hashable (the builders of checkpoints cache what they build)
SEG_OPTIONS = (("dims", (32, 64)), ("heads", (2, 2)), ("stages", ((1, 1, 1),)), ("decoder_channels", 16),
               ("detail_channels", 8), ("decoder_stages", 1))
assert json.loads(json.dumps(dict(SEG_OPTIONS))) == TINY_OPTIONS
THESIS_OPTIONS = (("embed_dim", 32), ("num_heads", 2), ("decoder_channels", 8), ("stem_channels", 8))
#: the same options on the command line, at the size the checkpoints are made for
SEG_OPTION_ARGS = ("--model-option dims=[32,64] --model-option heads=[2,2] --model-option stages=[[1,1,1]] "
                   "--model-option decoder_channels=16 --model-option detail_channels=8 --model-option decoder_stages=1 "
                   "--model-option img_size=[32,64]")


def checkpoint(name: str = "run.ckpt", classes: int = 8, edit: Callable[[dict], dict] | None = None):
    """Builder of a training checkpoint of a tiny crossvit_seg_tiny (``classes`` classes)."""
    def build(tmp: Path) -> None:
        ckpt = _trained_state("crossvit_seg_tiny", SEG_OPTIONS, classes)
        torch.save(edit(ckpt) if edit else ckpt, tmp / name)
    return build


def checkpoint_and_image(tmp: Path) -> None:
    checkpoint()(tmp)
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(tmp / "a.png")


def _other_model(ckpt: dict) -> dict:
    """The hyper-parameters of the checkpoint, the weights of another network (the thesis's)."""
    other = _trained_state("thesis_seg", THESIS_OPTIONS, 8)
    return {**ckpt, "state_dict": other["state_dict"]}


class Payload:
    """Unpickling it would create the marker file: the proof the payload ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickled_payload(name: str):
    def build(tmp: Path) -> None:
        torch.save({"state_dict": {}, "hyper_parameters": {"model": Payload(tmp / PAYLOAD_MARKER)}}, tmp / name)
    return build


def random_bytes(name: str, size: int = 4096):
    def build(tmp: Path) -> None:
        (tmp / name).write_bytes(np.random.default_rng(0).bytes(size))
    return build


def truncated_checkpoint(tmp: Path) -> None:
    checkpoint()(tmp)
    _truncate(tmp / "run.ckpt", 5000)


def safetensors_corrupt_header(tmp: Path) -> None:
    from crossvit_mtl.export import save_weights
    from crossvit_mtl.models import create_model

    path = save_weights(create_model("crossvit_seg_tiny", **dict(SEG_OPTIONS)), tmp / "w.safetensors")
    data = bytearray(path.read_bytes())
    data[8:20] = b"{not json!!}"  # the JSON header starts after its 8-byte length
    path.write_bytes(bytes(data))


def safetensors_other_shapes(tmp: Path) -> None:
    from crossvit_mtl.export import save_weights
    from crossvit_mtl.models import create_model

    save_weights(create_model("crossvit_seg_tiny", **dict(SEG_OPTIONS), num_classes=5), tmp / "w.safetensors")


def load_weights_into(preset: str, file: str, **options):
    """A Python call: ``create_model(preset, weights={tmp}/file, **options)``."""
    def call(tmp: Path):
        from crossvit_mtl.models import create_model

        return create_model(preset, weights=str(tmp / file), **options)
    call.command = f"create_model({preset!r}, weights='{{tmp}}/{file}', **{options!r})"
    return call


# -------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    id: str
    build: Callable[[Path], None]
    #: the command line, or a Python call taking tmp_path (for weights loaded from Python)
    command: str | Callable[[Path], object]
    #: pattern(s) the message must match; a list: each matches its own line (``data check`` on
    #: stdout, a partly failed ``predict`` on stderr)
    expect: str | list[str]
    rc: int = 2
    #: checks of what the command did write (beyond: every file that existed is unchanged)
    after: Callable[[Path], None] | None = None
    #: what the machine does to the command (a disk that fills), set up with pytest's monkeypatch
    patch: Callable[[pytest.MonkeyPatch, Path], None] | None = None


CASES = [
    # --- data files: MTAN npy trees (construction-time checks, through `fit`) ---------------
    Case("mtan_missing_train_split", mtan(lambda r: shutil.rmtree(r / "train"), fit={}), FIT,
         r"mtan/train: split folder missing \(found: val\)"),
    Case("mtan_missing_val_split", mtan(lambda r: shutil.rmtree(r / "val"), fit={}), FIT,
         r"mtan/val: split folder missing \(found: train\)"),
    Case("mtan_image_label_count_mismatch", mtan(lambda r: (r / "train" / "label_7" / "2.npy").unlink(), fit={}),
         FIT, r"train/label_7/2\.npy: missing, but image/2\.npy exists"),
    Case("mtan_truncated_npy", mtan(lambda r: _truncate(r / "train" / "depth" / "0.npy", 100), fit={}), FIT,
         r"train/depth/0\.npy: not a readable \.npy file"),
    Case("mtan_wrong_shape", mtan(lambda r: np.save(r / "train" / "image" / "0.npy",
                                                    np.zeros((16, 32, 4), np.float32)), fit={}), FIT,
         r"train/image/0\.npy: shape \(16, 32, 4\), expected HxWx3 or 3xHxW"),
    Case("mtan_task_not_provided", mtan(lambda r: None, fit={"tasks": ["segmentation", "normal"]}), FIT,
         r"tasks: 'normal' is not provided by data set 'cityscapes_mtan' \(it provides: segmentation, depth\)"),
    # --- data values: read by `data check` (exit 1, one line per problem) -------------------
    Case("mtan_wrong_dtype", mtan(lambda r: np.save(r / "train" / "image" / "1.npy", np.zeros((16, 32, 3), np.int32))),
         "data check {tmp}/mtan", [r"train/image/1\.npy: image has dtype int32, expected floating point",
                                   r"^1 problem\(s\) found in .*mtan$"], rc=1),
    Case("mtan_labels_out_of_range",
         mtan(lambda r: np.save(r / "val" / "label_7" / "1.npy", np.full((16, 32), 9, np.float32))),
         "data check {tmp}/mtan", [r"val/label_7/1\.npy: label values in \[9, 9\], expected -1 \(not annotated\) to 6",
                                   r"^1 problem\(s\) found"], rc=1),
    Case("mtan_nan_in_depth", mtan(lambda r: np.save(r / "train" / "depth" / "1.npy", np.full((16, 32), np.nan, np.float32))),
         "data check {tmp}/mtan", [r"train/depth/1\.npy: depth contains NaN or Inf", r"^1 problem\(s\) found"], rc=1),
    Case("nyuv2_inf_in_normals",
         nyuv2(lambda r: np.save(r / "val" / "normal" / "1.npy", np.full((12, 16, 3), np.inf, np.float32))),
         "data check {tmp}/nyuv2", [r"val/normal/1\.npy: normal contains NaN or Inf", r"^1 problem\(s\) found"], rc=1),
    Case("data_check_lists_every_problem", mtan(_several_problems), "data check {tmp}/mtan",
         [r"train/label_7/2\.npy: missing, but image/2\.npy exists", r"train/depth/1\.npy: depth contains NaN or Inf",
          r"val/label_7/1\.npy: label values in \[9, 9\]", r"val/image/1\.npy: not a readable \.npy file",
          r"^4 problem\(s\) found in .*mtan$"], rc=1),
    Case("mtan_has_no_test_split", mtan(lambda r: None, fit={"test_split": "test"}), FIT,
         r"^data\.test_split: \S+/mtan/test: split folder missing \(found: train, val\); set data\.test_split "
         r"to the split results are reported on"),
    Case("mtan_nan_in_depth_during_fit",
         mtan(lambda r: [np.save(p, np.full((16, 32), np.nan, np.float32)) for p in (r / "train" / "depth").glob("*.npy")],
              fit={}), FIT, r"train/depth/\d\.npy: depth contains NaN or Inf"),
    # --- data files: the PASCAL-Context and NYUD-v2 archives ---------------------------------
    Case("pascal_missing_split_file", pascal(lambda r: (r / "ImageSets" / "Context" / "train.txt").unlink(), fit={}),
         FIT, r"pc/ImageSets/Context/train\.txt: split file not found$"),
    Case("pascal_listed_id_without_image", pascal(lambda r: (r / "JPEGImages" / "2008_000008.jpg").unlink(), fit={}),
         FIT, r"pc/JPEGImages/2008_000008\.jpg: file not found \(image of '2008_000008', the first id of split 'train'\)$"),
    Case("pascal_task_not_provided", pascal(lambda r: None, fit={"options": {"tasks": ["depth"]}}), FIT,
         r"PascalContext has no task\(s\) 'depth' \(it provides: segmentation, human_parts, saliency, normal, edge\)"),
    Case("pascal_mat_without_labelmap",
         pascal(lambda r: savemat(r / "pascal-context" / "trainval" / "2008_000003.mat", {"Labels": np.zeros((32, 64))})),
         "data check {tmp}/pc", [r"pc/pascal-context/trainval/2008_000003\.mat: no variable 'LabelMap' \(it holds: Labels\)$",
                                 r"^1 problem\(s\) found"], rc=1),
    Case("pascal_normals_wrong_size",
         pascal(lambda r: Image.fromarray(np.zeros((32, 60, 3), np.uint8)).save(r / "normals_distill" / "2008_000015.png")),
         "data check {tmp}/pc", [r"pc/normals_distill/2008_000015\.png: size 32x60 differs from the LabelMap's 32x64",
                                 r"^1 problem\(s\) found"], rc=1),
    Case("pascal_segmentation_value_21",
         pascal(lambda r: save_label_png(r / "semseg" / "VOC12" / "2008_000002.png", np.full((32, 64), 21), palette=True)),
         "data check {tmp}/pc", [r"pc/semseg/VOC12/2008_000002\.png: label values \[21\] are outside 0\.\.20 and 255$",
                                 r"^1 problem\(s\) found"], rc=1),
    Case("pascal_truncated_part_annotation",
         pascal(lambda r: _truncate(r / "human_parts" / "2008_000007.mat", 300)),
         "data check {tmp}/pc", [r"pc/human_parts/2008_000007\.mat: not a readable MATLAB file",
                                 r"^1 problem\(s\) found"], rc=1),
    Case("nyud_missing_split_file", nyud(lambda r: (r / "gt_sets" / "train.txt").unlink(), fit={}), FIT,
         r"nyud/gt_sets/train\.txt: split file not found$"),
    Case("nyud_listed_id_without_image", nyud(lambda r: (r / "images" / "0003.png").unlink(), fit={}), FIT,
         r"nyud/images/0003\.png: file not found, nor 0003\.jpg \(the image of '0003', the first id of split 'train'\)$"),
    Case("nyud_has_no_test_split", nyud(lambda r: None, fit={"test_split": "test", "options": {"tasks": ["depth"]}}), FIT,
         r"^data\.test_split: NYUDv2 has no split 'test' \(choose from train, val; the benchmark's test labels are not "
         r"public, results are reported on val\); set data\.test_split to the split results are reported on$"),
    Case("nyud_depth_wrong_shape", nyud(lambda r: np.save(r / "depth" / "0002.npy", np.zeros((32, 64, 2), np.float32))),
         "data check {tmp}/nyud", [r"nyud/depth/0002\.npy: depth has shape \(32, 64, 2\), expected HxW or HxWx1$",
                                   r"^1 problem\(s\) found"], rc=1),
    Case("nyud_segmentation_value_41",
         nyud(lambda r: Image.fromarray(np.full((32, 64), 41, np.uint8)).save(r / "segmentation" / "0004.png")),
         "data check {tmp}/nyud", [r"nyud/segmentation/0004\.png: label values \[41\] are outside 0\.\.40",
                                   r"^1 problem\(s\) found"], rc=1),
    # --- data files: Cityscapes official layout, `data cityscapes` ----------------------------
    Case("cityscapes_corrupt_png",
         cityscapes(lambda r: _truncate(_cs_file(r, "leftImg8bit", "train", "leftImg8bit.png"), 100)),
         "data cityscapes --root {tmp}/cs --out {tmp}/out --size 8x16",
         rf"{cityscapes_stem(0)}_leftImg8bit\.png: cannot read image"),
    Case("cityscapes_camera_missing_key",
         cityscapes(lambda r: _cs_file(r, "camera", "train", "camera.json", 1).write_text('{"extrinsic": {"baseline": 0.2}}')),
         "data cityscapes --root {tmp}/cs --out {tmp}/out --size 8x16",
         rf"{cityscapes_stem(1)}_camera\.json: camera file lacks extrinsic\.baseline / intrinsic\.fx \('intrinsic'\)"),
    Case("folder_single_class", lambda tmp: (write_image_folder(tmp / "f", {"train": {"cat": 2}, "val": {"cat": 1}},
                                                                size=(32, 64)),
                                             write_config(tmp, model={"model": "crossvit_mtl_tiny"},
                                                          data={"dataset": "folder", "root": str(tmp / "f"),
                                                                "options": {"size": [32, 64]}, "tasks": None,
                                                                "test_split": "val"})),
         FIT, r"data set 'folder:f' has 1 classification class \(cat\) \(one sub-folder per class\); "
              r"classification needs at least 2"),
    # --- configs --------------------------------------------------------------------------
    Case("config_unknown_key", config(model={"learning_rate": 0.1}), FIT,
         r"does not accept option 'model\.learning_rate'"),
    Case("config_wrong_type", config(model={"lr": "fast"}), FIT,
         r'Parser key "model\.lr": Not of type PositiveFiniteFloat: could not convert string to float: .fast.'),
    Case("config_yaml_syntax", raw_config("model:\n  lr: [1e-3\n"), FIT,
         r"--config \S+/config\.yaml: not valid YAML \(while parsing a flow sequence in \S+/config\.yaml\", line 2, "
         r"column 7"),
    Case("config_lr_not_positive", config(model={"lr": -0.001}), FIT,
         r'"model\.lr": Not of type PositiveFiniteFloat: -0\.001 does not conform to restriction v>0\.0 and v<inf'),
    Case("config_lr_nan", config(model={"lr": float("nan")}), FIT,
         r'"model\.lr": Not of type PositiveFiniteFloat: nan does not conform to restriction v>0\.0 and v<inf'),
    Case("config_weight_decay_negative", config(model={"weight_decay": -0.05}), FIT,
         r'"model\.weight_decay": Not of type NonNegativeFiniteFloat: -0\.05 does not conform to restriction v>=0'),
    Case("config_betas_outside", config(model={"betas": [0.9, 1.0]}), FIT,
         r'"model\.betas": Not of type Beta: 1\.0 does not conform to restriction v>=0\.0 and v<1\.0'),
    Case("config_min_lr_ratio_outside", config(model={"min_lr_ratio": 1.5}), FIT,
         r'"model\.min_lr_ratio": Not of type ClosedUnitInterval: 1\.5 does not conform to restriction v>=0 and v<=1'),
    Case("config_warmup_negative", config(model={"warmup_epochs": -1}), FIT,
         r'"model\.warmup_epochs": Not of type NonNegativeFiniteFloat: -1 does not conform to restriction v>=0'),
    Case("config_unknown_optimizer", config(model={"optimizer": "nope"}), FIT,
         r'"model\.optimizer": Expected a typing\.Literal\[.adam., .adamw., .sgd.\]\. Got value: nope'),
    Case("config_unknown_weighting", config(model={"weighting": "nope"}), FIT,
         r'"model\.weighting": Expected a typing\.Literal\[.ew., .fixed., .*\]\. Got value: nope'),
    Case("config_unknown_loss", config(model={"model": "crossvit_mtl_tiny", "losses": {"depth": {"name": "nope"}}},
                                       data={"tasks": ["segmentation", "depth"]}), FIT,
         r"model\.losses\.depth: unknown depth loss 'nope'"),
    Case("config_loss_weight_negative", config(model={"losses": {"segmentation": {"weight": -1}}}), FIT,
         r"model\.losses\.segmentation\.weight: -1 does not conform to restriction v>=0\.0 and v<inf"),
    Case("config_unknown_loss_option", config(model={"losses": {"segmentation": {"name": "ce", "smoothing": 0.1}}}),
         FIT, r"model\.losses\.segmentation: .*unexpected keyword argument 'smoothing'"),
    Case("config_batch_size_zero", config(data={"batch_size": 0}), FIT,
         r'"data\.batch_size": Not of type PositiveInt: 0 does not conform to restriction v>0'),
    Case("config_task_not_a_task", config(data={"tasks": ["segmentation", "edges"]}), FIT,
         r"tasks: 'edges' is not a task"),
    Case("config_num_classes_below_2", config(model={"model_options": {"num_classes": 1}}), FIT,
         r"model\.model_options\.num_classes must be an integer >= 2, got 1"),
    Case("config_num_classes_not_the_data", config(model={"model_options": {"num_classes": 5}}), FIT,
         r"model\.model_options\.num_classes is 5, but data set 'synth' has 8 for segmentation"),
    Case("config_tasks_class_count_below_2",
         config(model={"model": "crossvit_mtl_tiny", "model_options": {"tasks": {"segmentation": 1}}}), FIT,
         r"model\.model_options\.tasks\.segmentation must be an integer >= 2, got 1"),
    Case("config_image_size_not_divisible", config(data={"options": {"length": 4, "height": 40, "width": 64}}), FIT,
         r"data image size 40x64 is not divisible by the patch size 16 of model 'crossvit_seg_tiny'"),
    Case("config_eval_size_not_divisible", config(data={"eval_transforms": {"size": [120, 256]}}), FIT,
         r"data image size 120x256 is not divisible by the patch size 16 of model 'crossvit_seg_tiny'"),
    # the benchmarks' transform settings: their types while parsing, what no type says when built
    Case("config_cat_max_ratio_above_one", config(data={"train_transforms": {"cat_max_ratio": 1.5}}), FIT,
         r'"data\.train_transforms": .*Not of type ClassShare: 1\.5 does not conform to restriction v>0\.0 and v<=1\.0'),
    Case("config_pad_to_zero", config(data={"eval_transforms": {"pad_to": [0, 64]}}), FIT,
         r'"data\.eval_transforms": .*\[0, 64\]'),
    Case("config_scale_range_infinite", config(data={"train_transforms": {"scale_range": [0.5, float("inf")]}}), FIT,
         r'"data\.train_transforms": .*Not of type PositiveFiniteFloat: inf does not conform'),
    Case("config_scale_range_reversed", config(data={"train_transforms": {"scale_range": [2.0, 0.5]}}), FIT,
         r"^scale_range must be a \(low, high\) pair of positive scale factors, low <= high, got \[2\.0, 0\.5\]$"),
    Case("config_two_scale_augmentations",
         config(data={"train_transforms": {"scale_range": [0.5, 2.0], "scales": [1.0, 1.5]}}), FIT,
         r"^train transform config keys 'scales' and 'scale_range' are two scale augmentations; give one"),
    Case("config_crop_rule_without_crop", config(data={"train_transforms": {"cat_max_ratio": 0.75,
                                                                            "cat_max_ratio_task": "segmentation"}}),
         FIT, r"^train transform config key 'cat_max_ratio' < 1 needs 'crop_size'"),
    Case("config_crop_rule_task_not_a_map", config(data={"train_transforms": {"cat_max_ratio_task": "segmentaton"}}),
         FIT, r"^train transform config key 'cat_max_ratio_task' must name a dense task .*got 'segmentaton'$"),
    # maps written by `test`: only tasks of 8-bit maps, and only the model's
    Case("config_save_predictions_not_a_map", config(), f"{FIT} --save_predictions [depth]",
         r"^save_predictions: 'depth' is not a task whose maps are 8-bit images"),
    Case("config_save_predictions_not_the_models", config(), f"{FIT} --save_predictions [edge]",
         r"^save_predictions: the model has no task 'edge' \(its tasks: segmentation\)$"),
    Case("config_thesis_size_not_divisible",
         config(model={"model": "thesis_seg", "model_options": {"embed_dim": 32, "num_heads": 2, "decoder_channels": 8}},
                data={"options": {"length": 4, "height": 40, "width": 64}}), FIT,
         r"data image size 40x64 is not divisible by the patch size 16 of model 'thesis_seg'"),
    Case("config_patch_sizes_not_dividing", config(model={"model_options": {"patch_sizes": [8, 12]}}), FIT,
         r"data image size 32x64 is not divisible by the patch size 12 of model 'crossvit_seg_tiny'"),
    Case("config_unknown_model_option", config(model={"model_options": {"num_clases": 5}}), FIT,
         r'"model\.model_options": Unexpected keys: \{.num_clases.\}'),
    Case("config_model_option_of_another_preset", config(model={"model_options": {"embed_dim": 32}}), FIT,
         r"model 'crossvit_seg_tiny' has no option 'embed_dim'; options: "),
    Case("config_drop_path_rate_outside", config(model={"model_options": {"drop_path_rate": 1.5}}), FIT,
         r"model 'crossvit_seg_tiny': drop_path_rate must be in \[0, 1\), got 1\.5"),
    Case("config_heads_not_dividing_dims", config(model={"model_options": {"heads": [3, 3]}}), FIT,
         r"model 'crossvit_seg_tiny': dims \[64, 128\] must be divisible by heads \[3, 3\]"),
    Case("config_max_steps_negative", config(trainer={"max_steps": -5}), FIT, r"max_steps.*-5"),
    # --- checkpoints and weights ----------------------------------------------------------
    Case("checkpoint_pickled_payload", pickled_payload("evil.ckpt"),
         "predict --checkpoint {tmp}/evil.ckpt --input {tmp} --out {tmp}/pred",
         r"evil\.ckpt: refused to load \(it holds more than weights"),
    Case("checkpoint_payload_resumed_by_fit", lambda tmp: (write_config(tmp), pickled_payload("evil.ckpt")(tmp)),
         FIT + " --ckpt_path {tmp}/evil.ckpt", r"evil\.ckpt: refused to load \(it holds more than weights"),
    Case("checkpoint_truncated_tested", lambda tmp: (write_config(tmp), truncated_checkpoint(tmp)),
         "test --config {tmp}/config.yaml --run_dir {tmp}/run --ckpt_path {tmp}/run.ckpt",
         r"run\.ckpt: not a readable checkpoint"),
    Case("weights_pickled_payload", pickled_payload("evil.pt"), load_weights_into("crossvit_seg_tiny", "evil.pt"),
         r"evil\.pt: refused to load \(it holds more than weights"),
    Case("checkpoint_truncated", truncated_checkpoint,
         "predict --checkpoint {tmp}/run.ckpt --input {tmp} --out {tmp}/pred",
         r"run\.ckpt: not a readable checkpoint"),
    Case("checkpoint_random_bytes", random_bytes("noise.ckpt"),
         "export --checkpoint {tmp}/noise.ckpt --format safetensors --out {tmp}/o.safetensors",
         r"--checkpoint \S+/noise\.ckpt: not a PyTorch checkpoint"),
    Case("checkpoint_not_a_training_checkpoint",
         lambda tmp: torch.save({"weight": torch.zeros(2)}, tmp / "plain.ckpt"),
         "predict --checkpoint {tmp}/plain.ckpt --input {tmp} --out {tmp}/pred",
         r"plain\.ckpt: not a crossvit-mtl training checkpoint"),
    Case("checkpoint_of_another_model", checkpoint("run.ckpt", edit=_other_model),
         "predict --checkpoint {tmp}/run.ckpt --input {tmp} --out {tmp}/pred",
         r"run\.ckpt: weights do not fit the model; missing: decoder\.[^;]*\(\+\d+ more\); unexpected: decoders\.[^;]*; "
         r"shape mismatch: encoder\.cls_token\.1 \(1, 1, 32\) vs \(1, 1, 64\)"),
    Case("checkpoint_of_another_class_count", checkpoint("run.ckpt", classes=8),
         "export --model crossvit_seg_tiny --weights {tmp}/run.ckpt --format safetensors --out {tmp}/o.safetensors "
         "--model-option num_classes=5 " + SEG_OPTION_ARGS,
         r"run\.ckpt: weights do not fit the model; shape mismatch: heads\.segmentation\.\S+ \(8,\) vs \(5,\)"),
    Case("predict_size_not_divisible", checkpoint_and_image,
         "predict --checkpoint {tmp}/run.ckpt --input {tmp}/a.png --out {tmp}/pred --size 40x64",
         r"--size: input size 40x64 is not divisible by the patch size 16"),
    Case("weights_random_bytes", random_bytes("noise.safetensors"),
         load_weights_into("crossvit_seg_tiny", "noise.safetensors"),
         r"noise\.safetensors: not a readable safetensors file"),
    Case("safetensors_corrupt_header", safetensors_corrupt_header,
         "export --model crossvit_seg_tiny --weights {tmp}/w.safetensors --format safetensors --out {tmp}/o.safetensors",
         r"w\.safetensors: not a readable safetensors file"),
    Case("safetensors_wrong_shapes", safetensors_other_shapes,
         load_weights_into("crossvit_seg_tiny", "w.safetensors", **dict(SEG_OPTIONS)),
         r"w\.safetensors: weights do not fit the model; shape mismatch: heads\.segmentation\.\S+ \(5,\) vs \(8,\)"),
]


# ---------------------------------------------- every file and folder argument, every way to break it
# Each argument gets a missing, an empty, a truncated, a random-bytes and a wrong-kind file (for
# folders: missing, a file, an empty folder, and the same damage to the file read inside them),
# and each output argument an existing output. Expected: one line "ARG FILE: what is wrong".
RANDOM = np.random.default_rng(0).bytes(4096)
#: a pickle header followed by noise: torch.load itself fails on it (IndexError: pop from empty list)
PICKLE_NOISE = b"\x80\x02" + np.random.default_rng(17).bytes(4094)


@functools.cache
def valid_bytes(kind: str) -> bytes:
    """A good file of each kind the commands read, whose damaged copies the cases write."""
    buffer = io.BytesIO()
    if kind == "checkpoint":
        torch.save(_trained_state("crossvit_seg_tiny", SEG_OPTIONS, 8), buffer)
    elif kind == "png":
        Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(buffer, format="png")
    elif kind == "safetensors":
        from safetensors.torch import save

        from crossvit_mtl.models import create_model

        return save(create_model("crossvit_seg_tiny", **dict(SEG_OPTIONS)).state_dict())
    elif kind == "config":  # flow style: cut anywhere, it is not YAML any more
        return yaml.safe_dump({"model": TINY_MODEL, "data": TINY_DATA, "trainer": TINY_TRAINER},
                              default_flow_style=True).encode()
    elif kind == "sweep":
        return yaml.safe_dump({"base": {"model": TINY_MODEL, "data": TINY_DATA},
                               "runs": {"seg": {"baseline": True}, "again": {}}}, default_flow_style=True).encode()
    elif kind == "metrics":
        return json.dumps({"stage": "val", "results": {"segmentation": {"miou": 0.5, "pixel_acc": 0.8}}}).encode()
    elif kind == "ids":  # cut in half it repeats an id
        return b"a\nabc\n"
    return buffer.getvalue()


#: what a file of another kind is, for each kind expected
OTHER_KIND = {"checkpoint": "png", "png": "checkpoint", "safetensors": "png", "config": "png", "sweep": "checkpoint",
              "metrics": "png", "ids": "png"}


def damaged(path: str, kind: str, damage: str, setup: Callable[[Path], object] | None = None):
    """Builder: ``setup`` (what the rest of the command needs), then ``path`` (relative to tmp)
    written as ``damage`` of a ``kind`` file."""
    def build(tmp: Path) -> None:
        if setup:
            setup(tmp)
        target = tmp / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if damage == "folder":
            target.mkdir()
        elif damage != "missing":
            good = valid_bytes(kind)
            target.write_bytes({"valid": good, "empty": b"", "truncated": good[:len(good) // 2], "random": RANDOM,
                                "pickle_noise": PICKLE_NOISE, "wrong_kind": valid_bytes(OTHER_KIND[kind])}[damage])
    return build


def image(tmp: Path) -> None:
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(tmp / "a.png")


def edge_prediction(tmp: Path) -> None:
    (tmp / "pred").mkdir(exist_ok=True)
    for stem in ("a", "abc"):
        Image.fromarray(np.zeros((16, 24), np.uint8)).save(tmp / "pred" / f"{stem}.png")


def edge_labels(tmp: Path) -> None:
    (tmp / "gt").mkdir(exist_ok=True)
    for stem in ("a", "abc"):
        Image.fromarray(np.zeros((16, 24), np.uint8)).save(tmp / "gt" / f"{stem}.png")


def with_checkpoint(tmp: Path) -> None:
    checkpoint()(tmp)
    image(tmp)


def existing(*paths: str, folder_with_file: bool = False):
    """Builder of outputs already there: files holding "keep me" (or folders holding one)."""
    def build(tmp: Path) -> None:
        for path in paths:
            target = tmp / path
            if folder_with_file:
                target.mkdir(parents=True)
                target = target / "kept.txt"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("keep me")
    return build


def both(*builders):
    def build(tmp: Path) -> None:
        for builder in builders:
            builder(tmp)
    return build


FILE_DAMAGE = ("missing", "empty", "truncated", "random", "wrong_kind", "folder")
#: why each damage fails, per kind of file (missing and folder are the same for all)
REASONS = {
    "checkpoint": {"truncated": r"not a readable checkpoint \(truncated or corrupt", "random": "not a PyTorch checkpoint",
                   "wrong_kind": "not a PyTorch checkpoint", "pickle_noise": r"not a readable checkpoint"},
    "safetensors": {"truncated": "not a readable safetensors file", "random": "not a readable safetensors file",
                    "wrong_kind": "not a readable safetensors file"},
    "config": {"truncated": "not valid YAML", "random": "not a text file", "wrong_kind": "not a text file"},
    "sweep": {"truncated": "not valid YAML", "random": "not a text file", "wrong_kind": "not a text file"},
    "png": {"truncated": "not a readable image", "random": "not a readable image", "wrong_kind": "not a readable image"},
    "metrics": {"truncated": "not valid JSON", "random": "not valid JSON", "wrong_kind": "not valid JSON"},
    "ids": {"truncated": "repeats id", "random": "not a text file", "wrong_kind": "not a text file"},
}
COMMON_REASONS = {"missing": "no such (checkpoint |weights )?file", "empty": "empty file",
                  "folder": "is a folder, expected a (checkpoint |weights )?file"}

PREDICT = "predict --checkpoint {tmp}/run.ckpt --input {tmp}/a.png --out {tmp}/pred"
TEST = "test --config {tmp}/config.yaml --run_dir {tmp}/run --ckpt_path {tmp}/run.ckpt"

#: (command, argument) -> (command line with the damaged file as {tmp}/FILE, FILE, kind, setup, damages)
FILE_ARGUMENTS = {
    ("edges", "--ids"): ("edges {tmp}/pred --labels {tmp}/gt --ids {tmp}/in.txt", "in.txt", "ids",
                         both(edge_prediction, edge_labels), FILE_DAMAGE),
    ("predict", "--checkpoint"): (PREDICT.replace("run.ckpt", "in.ckpt"), "in.ckpt", "checkpoint", image,
                                  FILE_DAMAGE + ("pickle_noise",)),
    ("predict", "--input"): (PREDICT.replace("a.png", "in.png"), "in.png", "png", with_checkpoint, FILE_DAMAGE),
    ("export", "--checkpoint"): ("export --checkpoint {tmp}/in.ckpt --format safetensors --out {tmp}/o.safetensors",
                                 "in.ckpt", "checkpoint", None, FILE_DAMAGE + ("pickle_noise",)),
    ("export", "--weights"): ("export --model crossvit_seg_tiny --weights {tmp}/in.safetensors --format safetensors "
                              "--out {tmp}/o.safetensors " + SEG_OPTION_ARGS, "in.safetensors", "safetensors", None,
                              FILE_DAMAGE),
    ("fit", "--config"): ("fit --config {tmp}/in.yaml --run_dir {tmp}/run", "in.yaml", "config", None, FILE_DAMAGE),
    ("test", "--ckpt_path"): (TEST.replace("run.ckpt", "in.ckpt"), "in.ckpt", "checkpoint", config(),
                              FILE_DAMAGE + ("pickle_noise",)),
    ("sweep", "CONFIG"): ("sweep {tmp}/in.yaml", "in.yaml", "sweep", None, FILE_DAMAGE),
    ("report", "RUN"): ("report {tmp}/run", "run/metrics.json", "metrics", None, FILE_DAMAGE),
    ("compare", "RUN"): ("compare {tmp}/run --baselines {tmp}/base", "run/metrics_test.json", "metrics",
                         damaged("base/metrics_test.json", "metrics", "valid"), FILE_DAMAGE),
    ("compare", "--baselines"): ("compare {tmp}/run --baselines {tmp}/base", "base/metrics_test.json", "metrics",
                                 damaged("run/metrics_test.json", "metrics", "valid"), FILE_DAMAGE),
}


def _file_reason(kind: str, damage: str, file: str) -> str:
    if file.endswith("metrics_test.json") and damage == "missing":
        return r"no metrics_test.json \(evaluate its checkpoint"
    if file.endswith("metrics.json") and damage == "missing":
        return r"no metrics.json or metrics_test.json|missing \(has the run's fit finished\?\)"
    if file.endswith(".json") and damage == "folder":
        return "is a folder, expected a file"
    return REASONS[kind].get(damage) or COMMON_REASONS[damage]


def _hostile_file_cases() -> list[Case]:
    cases = []
    for (command, argument), (line, file, kind, setup, damages) in FILE_ARGUMENTS.items():
        for damage in damages:
            # a single unreadable image is named and skipped like any other: exit code 1, not 2
            rc = 1 if argument == "--input" and damage not in ("missing", "folder") else 2
            where = re.escape(file.split("/")[0])
            reason = ("no PNG/JPEG images found" if argument == "--input" and damage in ("missing", "folder")
                      else _file_reason(kind, damage, file))
            cases.append(Case(f"{command}_{argument.strip('-').lower()}_{damage}", damaged(file, kind, damage, setup),
                              line, rf"^{re.escape(argument)} \S*{where}\S*: .*({reason})", rc=rc))
    return cases


def _predicted(*stems: str):
    def check(tmp: Path) -> None:
        records = json.loads((tmp / "pred" / "predictions.json").read_text())
        assert [r["image"] for r in records] == list(stems)
        for stem in stems:
            assert (tmp / "pred" / f"{stem}_labels.png").is_file()
    return check


def _folder_with_unreadable(tmp: Path) -> None:
    checkpoint()(tmp)
    (tmp / "in").mkdir()
    for name in ("a", "c", "e"):
        Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(tmp / "in" / f"{name}.png")
    (tmp / "in" / "b.png").write_bytes(b"")
    (tmp / "in" / "d.png").write_bytes(RANDOM)


#: every output argument: already there (a file, a folder holding files, a file in the way)
OUTPUT_ARGUMENTS = {
    ("edges", "--out"): [
        Case("edges_out_exists", both(edge_prediction, edge_labels, existing("o.json")),
             "edges {tmp}/pred --labels {tmp}/gt --out {tmp}/o.json",
             r"^--out \S+/o\.json: exists; pass --overwrite to replace it$"),
        Case("edges_out_under_a_file", both(edge_prediction, edge_labels, existing("o")),
             "edges {tmp}/pred --labels {tmp}/gt --out {tmp}/o/s.json",
             r"^--out \S+/o/s\.json: cannot be created, \S+/o is a file$")],
    ("predict", "--out"): [
        Case("predict_out_is_a_file", both(with_checkpoint, existing("pred")), PREDICT,
             r"^--out \S+/pred: is a file, expected a folder$"),
        Case("predict_out_holds_files", both(with_checkpoint, existing("pred", folder_with_file=True)), PREDICT,
             r"^--out \S+/pred: already holds files; pass --overwrite to write into it$")],
    ("export", "--out"): [
        Case("export_out_exists", both(checkpoint(), existing("o.safetensors")),
             "export --checkpoint {tmp}/run.ckpt --format safetensors --out {tmp}/o.safetensors",
             r"^--out \S+/o\.safetensors: exists; pass --overwrite to replace it$"),
        Case("export_out_under_a_file", both(checkpoint(), existing("o")),
             "export --checkpoint {tmp}/run.ckpt --format onnx --out {tmp}/o/model.onnx --overwrite",
             r"^--out \S+/o/model\.onnx: cannot be created, \S+/o is a file$")],
    ("report", "--out"): [
        Case("report_out_exists", both(damaged("run/metrics.json", "metrics", "valid"), existing("report.html")),
             "report {tmp}/run --out {tmp}/report.html", r"^--out \S+/report\.html: exists; pass --overwrite")],
    ("compare", "--out"): [
        Case("compare_out_exists", both(damaged("run/metrics_test.json", "metrics", "valid"),
                                        damaged("base/metrics_test.json", "metrics", "valid"), existing("table.md")),
             "compare {tmp}/run --baselines {tmp}/base --out {tmp}/table.md",
             r"^--out \S+/table\.md: exists; pass --overwrite")],
    ("data synth", "--out"): [
        Case("data_synth_out_exists", existing("cache", folder_with_file=True),
             "data synth --out {tmp}/cache --train 2 --val 1 --size 16x32",
             r"^--out \S+/cache: already exists; pass overwrite=True \(--overwrite\)"),
        Case("data_synth_out_not_a_cache", existing("cache", folder_with_file=True),
             "data synth --out {tmp}/cache --train 2 --val 1 --size 16x32 --overwrite",
             r"^--out \S+/cache: exists and is not a cache; refusing to replace it"),
        Case("data_synth_out_under_a_file", existing("cache"), "data synth --out {tmp}/cache/x --train 2 --val 1",
             r"^--out \S+/cache/x: cannot be created, \S+/cache is a file$")],
    ("data cityscapes", "--out"): [
        Case("data_cityscapes_out_is_a_file", both(cityscapes(lambda r: None), existing("out")),
             "data cityscapes --root {tmp}/cs --out {tmp}/out --size 8x16",
             r"^--out \S+/out: is a file, expected a folder$")],
    ("bench", "--out"): [
        Case("bench_out_holds_files", existing("bench", folder_with_file=True),
             "bench --models crossvit_seg_tiny --sizes 32x64 --out {tmp}/bench",
             r"^--out \S+/bench: already holds files; pass --overwrite")],
    ("fit", "--run_dir"): [
        Case("fit_run_dir_is_a_file", both(config(), existing("run")), FIT,
             r"^--run_dir \S+/run: is a file, expected a folder$"),
        Case("fit_run_dir_holds_a_run", both(config(), existing("run", folder_with_file=True)), FIT,
             r"^--run_dir \S+/run: already holds a run; resume it with --ckpt_path last")],
    ("sweep", "CONFIG"): [
        Case("sweep_run_folder_taken", both(lambda tmp: (tmp / "in.yaml").write_text(yaml.safe_dump(
                 {**yaml.safe_load(valid_bytes("sweep")), "sweep_dir": str(tmp / "sweep")})),
                 existing("sweep/again/seed0", folder_with_file=True)),
             "sweep {tmp}/in.yaml", r"^CONFIG \S+/in\.yaml: run 'again' would write into \S+/sweep/again/seed0, but "
                                    r"\S+/sweep/again/seed0 already exists and holds other files; choose another sweep_dir$")],
    ("demo", "--run_dir"): [
        Case("demo_run_dir_holds_files", existing("run", folder_with_file=True),
             "demo --data.root {tmp}/data --run_dir {tmp}/run", r"^--run_dir \S+/run: already holds files; choose another")],
    ("demo", "--data.root"): [
        Case("demo_data_not_a_cache", existing("data", folder_with_file=True),
             "demo --data.root {tmp}/data --run_dir {tmp}/run",
             r"^--data\.root \S+/data: already holds files; not a cache of scenes"),
        Case("demo_data_of_another_size", lambda tmp: write_synth(tmp / "data", train=1, val=1, test=1, height=16, width=32),
             "demo --data.root {tmp}/data --run_dir {tmp}/run",
             r"^--data\.root \S+/data: holds 16x32 scenes, the demo trains at 96x192; choose another --data\.root or pass "
             r"--size 16x32$")],
}

#: folder arguments: missing, a file, an empty folder (what is inside them: FILE_ARGUMENTS)
FOLDER_ARGUMENTS = {
    ("report", "RUN"): ("report {tmp}/in", None),
    ("compare", "RUN"): ("compare {tmp}/in --baselines {tmp}/base",
                         damaged("base/metrics_test.json", "metrics", "valid")),
    ("compare", "--baselines"): ("compare {tmp}/run --baselines {tmp}/in",
                                 damaged("run/metrics_test.json", "metrics", "valid")),
    ("data check", "PATH"): ("data check {tmp}/in", None),
    ("data cityscapes", "--root"): ("data cityscapes --root {tmp}/in --out {tmp}/out --size 8x16", None),
    ("predict", "--input"): (PREDICT.replace("a.png", "in"), with_checkpoint),
    ("edges", "PRED"): ("edges {tmp}/in --labels {tmp}/gt", edge_labels),
    ("edges", "--labels"): ("edges {tmp}/pred --labels {tmp}/in", edge_prediction),
    ("edges", "--boundaries"): ("edges {tmp}/pred --boundaries {tmp}/in", edge_prediction),
}
FOLDER_REASONS = {"missing": "no such folder", "file": "is a file, expected a folder",
                  "empty": r"no metrics.json or metrics_test.json|missing \(has the run's fit finished\?\)|"
                           r"no metrics_test.json \(evaluate its checkpoint|"
                           "not a recognised data set layout|folder missing|no PNG/JPEG images found|no PNG images found|"
                           r"no a\.png or a\.npy|no a\.mat or a\.png"}


def _hostile_folder_cases() -> list[Case]:
    cases = []
    for (command, argument), (line, setup) in FOLDER_ARGUMENTS.items():
        for damage in ("missing", "file", "empty"):
            def build(tmp: Path, damage=damage, setup=setup) -> None:
                if setup:
                    setup(tmp)
                if damage == "file":
                    (tmp / "in").write_bytes(RANDOM)
                elif damage == "empty":
                    (tmp / "in").mkdir()
            reason = "no PNG/JPEG images found" if argument == "--input" and damage != "empty" else FOLDER_REASONS[damage]
            if argument == "--input" and damage == "file":
                reason, rc = "not a readable image", 1
            else:
                rc = 2
            cases.append(Case(f"{command.replace(' ', '_')}_{argument.strip('-').lower()}_folder_{damage}", build,
                              line, rf"^{re.escape(argument)} \S+/in\S*: .*({reason})", rc=rc))
    return cases


CASES += _hostile_file_cases() + _hostile_folder_cases() + [c for cases in OUTPUT_ARGUMENTS.values() for c in cases] + [
    Case("predict_folder_with_unreadable_images", _folder_with_unreadable,
         "predict --checkpoint {tmp}/run.ckpt --input {tmp}/in --out {tmp}/pred",
         [r"^crossvit-mtl predict: error: --input \S+/in/b\.png: empty file$",
          r"^crossvit-mtl predict: error: --input \S+/in/d\.png: not a readable image"], rc=1,
         after=_predicted("a", "c", "e")),
    Case("checkpoint_of_another_model_tested", both(config(), checkpoint("run.ckpt", edit=_other_model)), TEST,
         r"^--ckpt_path \S+/run\.ckpt: weights do not fit model 'crossvit_seg_tiny'; missing: model\.decoder\."),
    Case("checkpoint_plain_state_dict_resumed", both(config(), lambda tmp: torch.save({"weight": torch.zeros(2)},
                                                                                     tmp / "plain.ckpt")),
         FIT + " --ckpt_path {tmp}/plain.ckpt", r"^--ckpt_path \S+/plain\.ckpt: not a training checkpoint"),
    Case("predict_strict_stops_at_the_first_unreadable_image", _folder_with_unreadable,
         "predict --checkpoint {tmp}/run.ckpt --input {tmp}/in --out {tmp}/pred --strict",
         r"^--input \S+/in/b\.png: empty file$"),
    Case("config_pretrained_random_bytes", both(lambda tmp: write_config(tmp, model={"pretrained": str(tmp / "release.pth")}),
                                                damaged("release.pth", "checkpoint", "random")), FIT,
         r"model\.pretrained \S+/release\.pth: not a PyTorch checkpoint"),
    Case("cache_labels_outside_the_classes_refused_by_fit", lambda tmp: (
            write_cache(tmp / "cache", size=(32, 64)), _put_label(tmp / "cache" / "train" / "labels.npy", 1, 77),
            write_config(tmp, data={"dataset": "cache", "root": str(tmp / "cache"), "options": None})), FIT,
         r"cache/train/labels\.npy: sample 1 has label values outside 0\.\.7 and 255"),
]


def _put_label(path: Path, sample: int, value: int) -> None:
    labels = np.load(path, mmap_mode="r+")
    labels[sample, 3, 5] = value
    labels.flush()


# ------------------------------------------------- every number and choice, every kind of bad value
# Every numeric, choice and boolean option of every sub-command (fit's and the demo's own options
# too, in Lightning's parser) meets a negative number, zero, a word, an absurdly large number and,
# where it takes real numbers, NaN: each is refused in one line naming the option and the value
# ("argument --batch_size: must be an integer from 1 to 4096, got '-5'"), exit code 2, unless the
# table says the option takes zero. Each option's legal value is parsed to what the table says.
PROBES = {"negative": "-5", "zero": "0", "word": "abc", "huge": "1" + "0" * 30}
#: what real-valued options also meet
REAL_PROBES = {"nan": "nan", "inf": "inf"}

#: a command line of each command the option is appended to: the files need not exist, since a bad
#: value is met while the command line is parsed, before any file is read
BASES = {
    "predict": PREDICT, "export": "export --checkpoint {tmp}/run.ckpt --format onnx --out {tmp}/model.onnx",
    "report": "report {tmp}/run", "models": "models", "data synth": "data synth --out {tmp}/cache",
    "data cityscapes": "data cityscapes --root {tmp}/cs --out {tmp}/cache", "data check": "data check {tmp}/data",
    "bench": "bench --out {tmp}/bench", "compare": "compare {tmp}/run --baselines {tmp}/base",
    "sweep": "sweep {tmp}/sweep.yaml", "edges": "edges {tmp}/pred --labels {tmp}/gt",
    "fit": "fit --run_dir {tmp}/run", "demo": "demo --data.root {tmp}/scenes --run_dir {tmp}/run",
}
#: (command, option) -> a value it takes, and what the parser makes of it
NUMBER_AND_CHOICE_ARGUMENTS = {
    ("predict", "--overwrite"): ("false", False), ("predict", "--strict"): ("true", True),
    ("predict", "--size"): ("32x64", (32, 64)), ("predict", "--mode"): ("slide", "slide"),
    ("predict", "--overlap"): ("0.5", 0.5), ("predict", "--batch_size"): ("3", 3),
    ("predict", "--device"): ("cuda:1", "cuda:1"), ("predict", "--precision"): ("bf16", "bf16"),
    ("predict", "--system_malloc"): ("yes", True), ("predict", "--compile"): ("False", False),
    ("export", "--format"): ("safetensors", "safetensors"), ("export", "--size"): ("64x32", (64, 32)),
    ("export", "--device"): ("cpu", "cpu"), ("export", "--opset"): ("14", 14), ("export", "--check"): ("false", False),
    ("export", "--tolerance"): ("1e-3", 1e-3), ("export", "--overwrite"): ("true", True),
    ("report", "--overwrite"): ("true", True), ("models", "--size"): ("8192x16", (8192, 16)),
    ("data synth", "--train"): ("7", 7), ("data synth", "--val"): ("1000000", 1_000_000), ("data synth", "--test"): ("1", 1),
    ("data synth", "--size"): ("16x32", (16, 32)), ("data synth", "--seed"): ("4294967295", 2**32 - 1),
    ("data synth", "--workers"): ("256", 256), ("data synth", "--overwrite"): ("true", True),
    ("data cityscapes", "--size"): ("8x16", (8, 16)), ("data cityscapes", "--labels"): ("mtan7", "mtan7"),
    ("data cityscapes", "--splits"): ("test", ["test"]), ("data cityscapes", "--workers"): ("1", 1),
    ("data cityscapes", "--overwrite"): ("false", False), ("data check", "--kind"): ("nyud_v2", "nyud_v2"),
    ("bench", "--sizes"): ("32x64", [(32, 64)]), ("bench", "--device"): ("cuda", "cuda"),
    ("bench", "--precision"): ("fp32", ["fp32"]), ("bench", "--batch_size"): ("2", [2]),
    ("bench", "--variants"): ("compile", ["compile"]), ("bench", "--allocators"): ("system", ["system"]),
    ("bench", "--repeats"): ("1", 1), ("bench", "--rounds"): ("3", 3),
    ("bench", "--threads"): ("1024", 1024), ("bench", "--quick"): ("true", True),
    ("bench", "--overwrite"): ("true", True), ("compare", "--split"): ("val", "val"),
    ("compare", "--delta_m_set"): ("single", "single"), ("compare", "--all_metrics"): ("true", True),
    ("compare", "--overwrite"): ("true", True), ("compare", "--seeds"): ("1", [1]),
    ("compare", "--correction"): ("bonferroni", "bonferroni"), ("compare", "--bootstrap"): ("100", 100),
    ("compare", "--published"): ("nyud_v2", "nyud_v2"),
    ("fit", "--checkpoint_selection"): ("val_loss", "val_loss"), ("demo", "--checkpoint_selection"): ("last", "last"),
    ("sweep", "--seeds"): ("3", [3]), ("sweep", "--launcher"): ("slurm", "slurm"),
    ("sweep", "--jobs"): ("2", 2), ("sweep", "--status"): ("true", True), ("sweep", "--dry_run"): ("true", True),
    ("edges", "--max_dist"): ("0.0075", 0.0075), ("edges", "--protocol"): ("mtinet", "mtinet"),
    ("edges", "--thin_gt"): ("false", False), ("edges", "--workers"): ("2", 2), ("edges", "--overwrite"): ("true", True),
    ("fit", "--seed_everything"): ("7", 7), ("fit", "--overwrite"): ("true", True),
    ("fit", "--checkpoint_every_n_steps"): ("5", 5), ("fit", "--test_after_fit"): ("true", True),
    ("fit", "--report_samples"): ("64", 64), ("fit", "--system_malloc"): ("true", True),
    ("demo", "--seed_everything"): ("false", False), ("demo", "--overwrite"): ("false", False),
    ("demo", "--checkpoint_every_n_steps"): ("1", 1), ("demo", "--test_after_fit"): ("false", False),
    ("demo", "--report_samples"): ("1", 1), ("demo", "--system_malloc"): ("true", True),
    ("demo", "--size"): ("32x64", (32, 64)), ("demo", "--train"): ("4", 4), ("demo", "--val"): ("2", 2),
    ("demo", "--test"): ("2", 2), ("demo", "--workers"): ("1", 1),
}
#: the options zero is a legal value of (a count of things it may do without, a seed)
ZERO_TAKEN = {("predict", "--overlap"), ("compare", "--bootstrap"), ("compare", "--seeds"), ("data synth", "--train"),
              ("data synth", "--val"), ("data synth", "--test"),
              ("data synth", "--seed"), ("fit", "--seed_everything"), ("fit", "--checkpoint_every_n_steps"),
              ("fit", "--report_samples"), ("demo", "--seed_everything"), ("demo", "--checkpoint_every_n_steps"),
              ("demo", "--report_samples"), ("sweep", "--seeds")}


#: the options that take real numbers (NaN and infinity are bad values of theirs too)
REAL_ARGUMENTS = {("predict", "--overlap"), ("export", "--tolerance"), ("edges", "--max_dist")}


def _bad_value_cases() -> list[Case]:
    cases = []
    for command, option in NUMBER_AND_CHOICE_ARGUMENTS:
        real = (command, option) in REAL_ARGUMENTS
        for probe, value in {**PROBES, **(REAL_PROBES if real else {})}.items():
            if probe == "zero" and (command, option) in ZERO_TAKEN:
                continue
            cases.append(Case(f"{command.replace(' ', '_')}_{option.strip('-')}_{probe}", lambda tmp: None,
                              f"{BASES[command]} {option} {value}",
                              rf"^argument {re.escape(option)}: .*'{re.escape(value)}'"))
    return cases


#: option names the walk of the parsers leaves to other tables: files and folders, free text
NOT_NUMBERS_OR_CHOICES = {"--config", "--print_config", "--trainer", "--model", "--data", "--run_dir",
                          "--save_predictions+"}  # task names, which are plug-ins: its cases are above


@functools.cache
def _lightning_parser(command: str):
    """The parser fit (validate and test share its options) or the demo parses with, built as they
    build it and caught before it parses anything."""
    from crossvit_mtl.cli.demo import DemoCLI
    from crossvit_mtl.cli.train import CrossViTCLI, cli_kwargs

    class Built(Exception):
        pass

    class Probe(DemoCLI if command == "demo" else CrossViTCLI):  # type: ignore[misc]
        def parse_arguments(self, parser, args):
            raise Built(parser)

    try:
        Probe(**cli_kwargs(), args=[], run=False)
    except Built as built:
        return built.args[0]
    raise AssertionError("the CLI parsed nothing")


@functools.cache
def _option_actions() -> dict[tuple[str, str], argparse.Action]:
    """(command, option or positional) -> its action, in every parser of the command line: the
    argparse sub-commands and the top-level options of Lightning's parser (fit for fit, validate
    and test; the demo); the hidden spellings (hyphens) left out."""
    from crossvit_mtl.cli import build_parser

    found = {}

    def walk(parser, command):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    if action.dest == "command" and name in LIGHTNING:
                        continue
                    walk(sub, f"{command} {name}".strip())
            elif not isinstance(action, argparse._HelpAction) and action.help != argparse.SUPPRESS:
                found[command, action.option_strings[0] if action.option_strings else action.metavar] = action
    walk(build_parser(), "")
    for command in ("fit", "demo"):
        for action in _lightning_parser(command)._actions:
            if action.option_strings and "." not in action.dest and action.help != argparse.SUPPRESS:
                found[command, action.option_strings[-1]] = action
    return found


LIGHTNING = ("fit", "validate", "test", "demo")


def _number_and_choice_arguments() -> set[tuple[str, str]]:
    from crossvit_mtl.cli.args import Boolean, Device, Integer, Number, RunSeed, Size

    typed = (Boolean, Device, Integer, Number, RunSeed, Size)
    return {key for key, action in _option_actions().items()
            if key[1] not in NOT_NUMBERS_OR_CHOICES and action.nargs != 0
            and (action.choices is not None or isinstance(action.type, typed) or action.type in (int, float)
                 or key[0] in LIGHTNING)}


CASES += _bad_value_cases()


# ------------------------------------------------------------- resuming, and a disk that fills
def resumable(tmp: Path, name: str = "run.ckpt") -> None:
    """The tiny run's config, and a checkpoint of it as `fit` writes them: its model's and data's
    options the config's (and the seed fit gives the data, 42)."""
    write_config(tmp)
    ckpt = _trained_state("crossvit_seg_tiny", SEG_OPTIONS, 8)
    ckpt = {**ckpt, "hyper_parameters": {**ckpt["hyper_parameters"], **TINY_MODEL},
            "datamodule_hyper_parameters": {**TINY_DATA, "seed": 42}}
    (tmp / name).parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, tmp / name)


RESUMED = r"^--ckpt_path \S+/{}: a resumed fit keeps the options its checkpoint was trained with, but was given "
LEAVE_OUT = r"; leave them out, or start a new run without --ckpt_path \(another --run_dir\)$"


class FullDisk(io.RawIOBase):
    """A file on a disk with ``room`` bytes left: the write that would go beyond fails as the
    kernel's does (ENOSPC), and torch's writer re-raises it as its own RuntimeError."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)


def disk_full_from_step(step: int):
    """A patch: every checkpoint of training step ``step`` on finds the disk full part-way."""
    def patch(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
        save = torch.save

        def save_on_full_disk(obj, f, *args, **kwargs):
            if isinstance(obj, dict) and obj.get("global_step", -1) >= step:
                f = FullDisk(f, room=4096)
            return save(obj, f, *args, **kwargs)
        monkeypatch.setattr(torch, "save", save_on_full_disk)
    return patch


def no_space_writing(owner, attribute: str, name: str | None = None):
    """A patch: ``owner.attribute`` (``owner`` may be a module's name) raises ENOSPC as a write that
    found the disk full does (no file name in it); with ``name``, only for the file of that name
    (its first argument, the path itself for ``Path`` methods)."""
    def patch(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
        target = importlib.import_module(owner) if isinstance(owner, str) else owner
        real = getattr(target, attribute)

        def full(*args, **kwargs):
            if name is None or Path(str(args[0])).name == name:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(*args, **kwargs)
        monkeypatch.setattr(target, attribute, full)
    return patch


def _last_checkpoint_of_step(step: int):
    def check(tmp: Path) -> None:
        folder = tmp / "run" / "checkpoints"
        assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == step
        assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")], "a partial file was left"
    return check


def _no_partial_cache(tmp: Path) -> None:
    assert not (tmp / "cache").exists() and not list(tmp.glob(".cache.tmp-*"))


STEPS_OF_TWO = {"max_steps": 2, "limit_train_batches": 2}
NO_SPACE = r": no space left on the device; nothing written before was lost: free some space and "

CASES += [
    Case("resume_fit_with_another_model", resumable, FIT + " --ckpt_path {tmp}/run.ckpt --model.model crossvit_mtl_small",
         RESUMED.format(r"run\.ckpt") + r"--model\.model crossvit_mtl_small \(the checkpoint's: crossvit_seg_tiny\)"
         + LEAVE_OUT),
    Case("resume_fit_with_another_batch_size", resumable, FIT + " --ckpt_path {tmp}/run.ckpt --data.batch_size 4",
         RESUMED.format(r"run\.ckpt") + r"--data\.batch_size 4 \(the checkpoint's: 2\)" + LEAVE_OUT),
    Case("resume_fit_with_another_seed", resumable, FIT + " --ckpt_path {tmp}/run.ckpt --seed_everything 7",
         RESUMED.format(r"run\.ckpt") + r"--seed_everything 7 \(the checkpoint's data\.seed: 42\)" + LEAVE_OUT),
    Case("resume_fit_from_an_edited_config", both(resumable, config(model={"lr": 0.01, "weighting": "uw"})),
         FIT + " --ckpt_path {tmp}/run.ckpt",
         RESUMED.format(r"run\.ckpt") + r"--model\.lr 0\.01 \(the checkpoint's: 0\.001\); --model\.weighting uw "
         r"\(the checkpoint's: ew\)" + LEAVE_OUT),
    Case("resume_fit_last_with_other_model_options", lambda tmp: resumable(tmp, "run/checkpoints/last.ckpt"),
         FIT + " --ckpt_path last --model.model_options '{{dims: [64, 128]}}'",
         RESUMED.format(r"checkpoints/last\.ckpt") + r"--model\.model_options \{'dims': \[64, 128\]\} \(the checkpoint's: "
         r"\{'dims': \[32, 64\], 'heads'"),
    Case("checkpoint_write_finds_the_disk_full", config(trainer=STEPS_OF_TWO), FIT + " --checkpoint_every_n_steps 1",
         r"^\S+/run/checkpoints/(best|last)\.ckpt" + NO_SPACE + r"resume with --ckpt_path last$", rc=1,
         patch=disk_full_from_step(2), after=_last_checkpoint_of_step(1)),
    Case("metrics_write_finds_the_disk_full", config(), FIT,
         r"^--run_dir \S+/run" + NO_SPACE + r"resume with --ckpt_path last$", rc=1,
         patch=no_space_writing(Path, "write_text", "metrics.json")),
    Case("report_write_finds_the_disk_full", damaged("run/metrics.json", "metrics", "valid"), "report {tmp}/run",
         r"^\S+/run/report\.html" + NO_SPACE + r"run the command again$", rc=1,
         patch=no_space_writing(Path, "write_text", "report.html")),
    Case("predict_write_finds_the_disk_full", with_checkpoint, PREDICT,
         r"^--out \S+/pred" + NO_SPACE + r"run the command again$", rc=1,
         patch=no_space_writing(Image.Image, "save")),
    Case("data_synth_write_finds_the_disk_full", lambda tmp: None, "data synth --out {tmp}/cache --train 2 --val 1 --size 16x32",
         r"^--out \S+/cache" + NO_SPACE + r"run the command again$", rc=1,
         patch=no_space_writing("crossvit_mtl.data.cache", "open_memmap"), after=_no_partial_cache),
]


# ------------------------------------------------------------------------------------ running
#: a progress bar's last state ("predict (resize): 100%|####| 3/3 [00:01<00:00, ...]"), not a message
TQDM_BAR = re.compile(r"\d+%\|.*\| *\d+/\d+ \[")


def visible_lines(text: str) -> list[str]:
    """The lines a terminal would show from the error on: progress bars redraw with carriage
    returns, so only what follows a line's last one stays; empty lines and a bar's final state are
    left out, and so is what Lightning printed of a run before a problem met during training
    stopped it."""
    lines = [line.rsplit("\r", 1)[-1].strip() for line in text.split("\n")]
    lines = [line for line in lines if line and not TQDM_BAR.search(line)]
    first = next((i for i, line in enumerate(lines) if re.match(r"crossvit-mtl \S+: error: ", line)), 0)
    return lines[first:]


def run_case(case: Case, tmp: Path) -> tuple[int | None, list[str], BaseException | None]:
    """(exit code, the lines the user sees, the exception if one escaped)."""
    if callable(case.command):
        try:
            case.command(tmp)
        except Exception as err:
            return None, visible_lines(str(err)), err
        pytest.fail(f"{case.command.command} raised nothing")
    argv = shlex.split(case.command.format(tmp=tmp))
    try:
        with lightning_logs_to_stderr():
            rc = main(argv)
    except SystemExit as exit:  # argument parsers exit on their own
        rc = exit.code
    return rc, [], None


@contextlib.contextmanager
def lightning_logs_to_stderr():
    """Lightning's log handlers keep the stderr of the test that first imported Lightning, closed
    since: point them at the stderr of now (captured), where the user would see their lines."""
    handlers = [h for name in ("lightning", "lightning.pytorch", "lightning.fabric")
                for h in logging.getLogger(name).handlers if isinstance(h, logging.StreamHandler)]
    before = [h.stream for h in handlers]
    for handler in handlers:
        handler.stream = sys.stderr  # not setStream: it flushes the old stream, perhaps closed
    try:
        yield
    finally:
        for handler, stream in zip(handlers, before):
            handler.stream = stream


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_gives_one_line_naming_it(case: Case, tmp_path: Path, capsys, monkeypatch):
    case.build(tmp_path)
    capsys.readouterr()  # what building printed is not the command's
    before = snapshot(tmp_path)
    if case.patch:
        case.patch(monkeypatch, tmp_path)
    rc, lines, err = run_case(case, tmp_path)  # an exception escaping here is a traceback for the user
    if callable(case.command):
        assert isinstance(err, ValueError), f"{type(err).__name__} is not a ValueError: {err}"
    else:
        captured = capsys.readouterr()
        listing = case.command.startswith("data check") and case.rc == 1  # problems listed on stdout
        lines = visible_lines(captured.out if listing else captured.err)
        assert rc == case.rc, (rc, lines[-5:])
        assert "Traceback" not in captured.err + captured.out
    after = snapshot(tmp_path)
    assert {path: after.get(path) for path in before} == before, "a file that existed was changed or removed"
    expected = case.expect if isinstance(case.expect, list) else [case.expect]
    text = "\n".join(lines)
    assert not (tmp_path / PAYLOAD_MARKER).exists(), "a pickled payload ran"
    assert "Traceback" not in text
    if case.after:
        case.after(tmp_path)
    if isinstance(case.expect, list):  # each problem on its own line (data check: then the summary)
        assert len(lines) == len(expected), lines
        for pattern in expected:
            assert sum(bool(re.search(pattern, line)) for line in lines) == 1, (pattern, lines)
        return
    assert len(lines) == 1, lines
    message = lines[0]
    if not callable(case.command):
        prefix = f"crossvit-mtl {case.command.split()[0]}: error: "
        assert message.startswith(prefix), message
        message = message[len(prefix):]
    assert re.search(expected[0], message), (expected[0], message)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_corpus_is_large_and_spans_every_kind_of_input():
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)
    kinds = {c.id.split("_")[0] for c in CASES}
    assert {"mtan", "nyuv2", "cityscapes", "pascal", "nyud", "data", "config", "checkpoint", "weights",
            "safetensors"} <= kinds


#: arguments of the sub-commands that name no file or folder
NOT_PATHS = {"--train", "--val", "--workers", "--overwrite", "--strict", "--size", "--mode", "--overlap",
             "--batch_size", "--precision", "--compile", "--model", "--model_option", "--format", "--opset",
             "--check", "--tolerance", "--pattern", "--seed", "--labels", "--splits", "--kind", "--models",
             "--sizes", "--variants", "--allocators", "--repeats", "--rounds", "--threads", "--quick", "--dry_run",
             "--device", "--test", "--split", "--reference", "--delta_m_set", "--all_metrics", "--seeds", "--runs",
             "--correction", "--bootstrap", "--published",
             "--system_malloc", "--max_dist", "--protocol", "--thin_gt", "--launcher", "--jobs", "--status"}
#: fit, validate and test take these (Lightning's parser); fit stands for the three
LIGHTNING_PATHS = {("fit", "--config"), ("test", "--ckpt_path"), ("fit", "--run_dir"), ("demo", "--run_dir"),
                   ("demo", "--data.root")}


def _path_arguments() -> set[tuple[str, str]]:
    """(command, argument) of every file or folder argument of the command line's parsers."""
    argparse_commands = {key for key in _option_actions() if key[0] not in LIGHTNING and key[1] not in NOT_PATHS}
    return argparse_commands | LIGHTNING_PATHS


def test_every_file_and_folder_argument_meets_every_kind_of_damage():
    """A class, not cases: a new file argument without its cases fails here."""
    covered_files = {key for key, (*_, damages) in FILE_ARGUMENTS.items() if set(FILE_DAMAGE) <= set(damages)}
    for key in sorted(_path_arguments()):
        assert key in covered_files | set(FOLDER_ARGUMENTS) | set(OUTPUT_ARGUMENTS), f"{key}: no malformed-input cases"
    # run folders: the metrics file read inside them is damaged too (data folders: the data cases above)
    assert {("report", "RUN"), ("compare", "RUN"), ("compare", "--baselines")} <= covered_files
    ids = {c.id for c in CASES}
    for (command, argument), (*_, damages) in FILE_ARGUMENTS.items():
        for damage in damages:
            assert f"{command}_{argument.strip('-').lower()}_{damage}" in ids


def test_every_number_and_choice_argument_meets_every_kind_of_bad_value():
    """A class, not cases: a new numeric, choice or boolean option without its row fails here."""
    from crossvit_mtl.cli.args import Number

    found = _number_and_choice_arguments()
    assert found == set(NUMBER_AND_CHOICE_ARGUMENTS), f"without a row: {found - set(NUMBER_AND_CHOICE_ARGUMENTS)}"
    assert {key for key in found if isinstance(_option_actions()[key].type, Number)} == REAL_ARGUMENTS
    assert found >= ZERO_TAKEN
    ids = {c.id for c in CASES}
    for command, option in found:
        for probe in PROBES:
            taken = probe == "zero" and (command, option) in ZERO_TAKEN
            assert taken or f"{command.replace(' ', '_')}_{option.strip('-')}_{probe}" in ids, (command, option, probe)


def _parsed(command: str, option: str, argv: list[str]):
    """What the command's parser makes of ``argv`` for ``option`` (nothing else is run)."""
    from crossvit_mtl.cli import build_parser

    action = _option_actions()[command, option]
    if command in LIGHTNING:
        return _lightning_parser(command).parse_args(argv[1:])[action.dest]
    return getattr(build_parser().parse_args(argv), action.dest)


@pytest.mark.parametrize("key", sorted(NUMBER_AND_CHOICE_ARGUMENTS), ids=" ".join)
def test_legal_values_are_taken_as_given(key, tmp_path):
    from crossvit_mtl.cli.args import Boolean

    command, option = key
    text, expected = NUMBER_AND_CHOICE_ARGUMENTS[key]
    base = shlex.split(BASES[command].format(tmp=tmp_path))
    assert _parsed(command, option, [*base, option, text]) == expected
    if key in ZERO_TAKEN:
        assert _parsed(command, option, [*base, option, "0"]) == ([0] if isinstance(expected, list) else 0)
    if isinstance(_option_actions()[key].type, Boolean):  # a switch: alone it is true
        assert _parsed(command, option, [*base, option]) is True
    if "_" in option and command not in LIGHTNING:  # one spelling in --help; the hyphenated one is taken too
        assert _parsed(command, option, [*base, option.replace("_", "-"), text]) == expected


def test_help_spells_every_option_with_underscores_and_lists_no_other_spelling(capsys):
    from crossvit_mtl.cli import build_parser

    helps = {}
    for command in sorted({key[0] for key in _option_actions()}):
        if command in LIGHTNING:
            helps[command] = _lightning_parser(command).format_help()
            continue
        parser = build_parser()
        for word in command.split():
            parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
        helps[command] = parser.format_help()
    for command, text in helps.items():
        listed = re.findall(r"(?<![\w-])--[a-z][\w.-]*", text)
        assert listed, command
        assert not [o for o in listed if "-" in o[2:]], (command, listed)
    assert "--batch_size" in helps["predict"] and "--system_malloc" in helps["predict"]
    assert "--run_dir" in helps["fit"] and "--checkpoint_every_n_steps" in helps["fit"]


def test_lightning_boolean_keys_take_a_bare_flag_too():
    parsed = _lightning_parser("fit").parse_args(["--trainer.enable_model_summary", "--model.compile", "--overwrite",
                                                  "--trainer.enable_progress_bar", "false"])
    assert parsed.trainer.enable_model_summary is True and parsed.model.compile is True and parsed.overwrite is True
    assert parsed.trainer.enable_progress_bar is False


def test_an_evaluation_says_the_checkpoint_s_model_options_win(tmp_path, capsys):
    """validate and test evaluate the checkpoint's network: a model option given otherwise is said
    to be overridden, in one line, and the run goes on."""
    resumable(tmp_path)
    assert main(["test", "--config", str(tmp_path / "config.yaml"), "--run_dir", str(tmp_path / "run"),
                 "--ckpt_path", str(tmp_path / "run.ckpt"), "--model.lr", "0.5"]) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if "not as given" in line]
    assert said == [f"test: the model is the checkpoint's ({tmp_path / 'run.ckpt'}), not as given: --model.lr 0.5 "
                    "(the checkpoint's: 0.001)"]


def test_a_resumed_fit_takes_the_checkpoint_s_options_and_says_which_given_ones_win(tmp_path, capsys):
    """Resumed without its config, a fit trains the checkpoint's model on the checkpoint's data; a
    data option that may change (RESUMABLE) is taken as given, and said to be."""
    write_config(tmp_path, model={"model_options": dict(SEG_OPTIONS)}, trainer={"max_steps": 1})
    run = tmp_path / "run"
    assert main(["fit", "--config", str(tmp_path / "config.yaml"), "--run_dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["fit", "--run_dir", str(run), "--ckpt_path", "last", "--trainer.max_steps", "2",
                 "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1", "--trainer.logger", "false",
                 "--trainer.precision", "32-true", "--trainer.enable_progress_bar", "false", "--report_samples", "0",
                 "--data.persistent_workers", "false"]) == 0
    out = capsys.readouterr().out
    assert (f"resuming {run / 'checkpoints' / 'last.ckpt'} with data.persistent_workers False (the checkpoint's: "
            "True): the given value is used") in out
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["model_options"] == json.loads(json.dumps(dict(SEG_OPTIONS)))
    assert {k: config["data"][k] for k in TINY_DATA} == TINY_DATA
    assert config["data"]["seed"] == 42 and config["data"]["persistent_workers"] is False
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


def test_a_checkpoint_write_that_finds_the_disk_full_keeps_the_previous_one(tmp_path):
    from crossvit_mtl.engine.checkpoint import AtomicCheckpointIO

    io_ = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io_.save_checkpoint({"global_step": 1, "w": torch.arange(4.0)}, path)
    before = path.read_bytes()
    save = torch.save
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(torch, "save", lambda obj, f: save(obj, FullDisk(f, room=1000)))
        with pytest.raises(OSError) as raised:
            io_.save_checkpoint({"global_step": 2, "w": torch.zeros(10_000)}, path)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)
    assert isinstance(raised.value.__cause__, RuntimeError)  # what torch made of it: "unexpected pos"
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    assert torch.load(path, weights_only=True)["global_step"] == 1
