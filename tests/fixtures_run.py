"""The tiny run: the one config every test that trains a model starts from.

The smallest real crossvit_mtl network (one stage, 32/64 channels) on 32x64 synthetic scenes, two
optimiser steps. A test changes only what it is about: ``tiny_config(model={"weighting": "uw"})``.
``tests/conftest.py`` turns it into session fixtures (the scenes' cache, the fitted run).
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

#: small enough to build in milliseconds, big enough to be a real crossvit_mtl network
TINY_OPTIONS = {"dims": [32, 64], "heads": [2, 2], "stages": [[1, 1, 1]], "decoder_channels": 16,
                "detail_channels": 8, "decoder_stages": 1}
TINY_MODEL = {"model": "crossvit_mtl_tiny", "lr": 1e-3, "warmup_epochs": 0.0, "model_options": TINY_OPTIONS}
TINY_TASKS = ["segmentation", "depth", "normal", "classification"]
TINY_DATA = {"dataset": "synth", "options": {"length": 4, "height": 32, "width": 64}, "tasks": TINY_TASKS,
             "batch_size": 2, "num_workers": 0}
TINY_TRAINER = {"max_steps": 2, "limit_val_batches": 1, "limit_test_batches": 1, "enable_progress_bar": False,
                "enable_model_summary": False, "precision": "32-true", "log_every_n_steps": 1,
                "accelerator": "cpu"}
TINY = {"model": TINY_MODEL, "data": TINY_DATA, "trainer": TINY_TRAINER, "report_samples": 0}


def merge(base: dict, changes: dict | None) -> dict:
    """``changes`` over a copy of ``base``; a value None removes the key."""
    out = copy.deepcopy(base)
    for key, value in (changes or {}).items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_config(model: dict | None = None, data: dict | None = None, trainer: dict | None = None,
                **top) -> dict:
    """The tiny run with these changes to its groups (and top-level keys); None removes a key."""
    return merge({**TINY, "model": merge(TINY_MODEL, model), "data": merge(TINY_DATA, data),
                  "trainer": merge(TINY_TRAINER, trainer)}, top)


def write_config(path: Path, config: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)
