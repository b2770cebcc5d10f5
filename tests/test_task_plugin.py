"""A task defined in this file alone, registered, then trained, evaluated, cached, compared and
predicted end to end through the command line: adding a task to the project is one module."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchmetrics import Metric

from crossvit_mtl.cli import main
from crossvit_mtl.data.cache import CacheWriter
from crossvit_mtl.data.common import DatasetInfo
from crossvit_mtl.data.registry import register_dataset, unregister_dataset
from crossvit_mtl.data.synth import SynthScenes, synth_info
from crossvit_mtl.tasks import MetricInfo, Storage, Task, register_task, task_names, unregister_task
from crossvit_mtl.tasks.base import colorize_scalar
from fixtures_run import tiny_config, write_config


class Brightness(Task):
    """The toy: each pixel's brightness (mean of R, G, B in [0, 1]), a dense regression anyone can
    learn from the image itself."""

    name = "brightness"
    storage = Storage("brightness.npy", np.float32, ())
    out_channels = 1
    losses = {"l1": nn.L1Loss}
    default_loss = "l1"
    metrics = {"mae": MetricInfo(False, "mean abs error")}
    primary_metric = "mae"
    delta_metrics = ("mae",)
    single_delta_metric = "mae"
    pad_value = 0.0

    def bad_values(self, array, meta):
        return ~((array >= 0) & (array <= 1)).reshape(len(array), -1).all(1), "brightness outside [0, 1]"

    def finalize(self, output):
        return torch.sigmoid(output)

    def build_metric(self, meta, stage="test"):
        return MeanAbsError()

    def example_target(self, channels, batch, size, generator):
        return torch.rand(batch, 1, *size, generator=generator)

    def prediction(self, output):
        return output[0]

    def colorize(self, value, meta, reference=None):
        return colorize_scalar(np.asarray(value).reshape(np.shape(value)[-2:]), 1.0, cmap="gray")


class MeanAbsError(Metric):
    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred, target):
        self.total += (pred.double() - target.double()).abs().sum()
        self.count += target.numel()

    def compute(self):
        return {"mae": float(self.total / self.count) if self.count else math.nan}


class BrightScenes(SynthScenes):
    """The built-in scenes with the toy's ground truth beside segmentation."""

    info = DatasetInfo(**{**vars(synth_info()), "name": "bright", "tasks": ("segmentation", "brightness")})

    def load(self, index):
        raw = super().load(index)
        return {"image": raw["image"], "segmentation": raw["segmentation"],
                "brightness": (raw["image"].astype(np.float32) / 255).mean(-1)}


@pytest.fixture
def registered():
    register_task(Brightness)
    register_dataset("bright", BrightScenes)
    yield
    unregister_task("brightness")
    unregister_dataset("bright")


def _config(tmp_path, name, tasks, data):
    path = tmp_path / f"{name}.yaml"
    write_config(path, tiny_config(model={"lr": 2e-3}, data={**data, "options": None, "tasks": tasks, "batch_size": 4},
                                   trainer={"max_steps": 4}, report_samples=1))
    return path


@pytest.mark.heavy
def test_a_task_defined_in_one_file_trains_evaluates_compares_and_predicts(registered, tmp_path, capsys):
    assert "brightness" in task_names()
    # the cache stores it as the task's storage says, and a training run reads it from there
    with CacheWriter(tmp_path / "cache", BrightScenes.info, (32, 64)) as writer:
        for split in ("train", "val", "test"):
            scenes = BrightScenes(split=split, length=8, height=32, width=64)
            writer.write_split(split, len(scenes), (scenes.load(i) for i in range(len(scenes))))
    stored = np.load(tmp_path / "cache" / "train" / "brightness.npy")
    assert stored.shape == (8, 32, 64) and stored.dtype == np.float32
    np.testing.assert_allclose(stored[3], BrightScenes(length=8, height=32, width=64).load(3)["brightness"])

    runs = {"both": ["segmentation", "brightness"], "single_seg": ["segmentation"], "single_bright": ["brightness"]}
    data = {"dataset": "cache", "root": str(tmp_path / "cache")}
    for name, tasks in runs.items():
        config = _config(tmp_path, name, tasks, data)
        assert main(["fit", "--config", str(config), "--run_dir", str(tmp_path / name), "--test_after_fit", "true"]) == 0
    results = json.loads((tmp_path / "both" / "metrics_test.json").read_text())["results"]
    assert set(results) == {"segmentation", "brightness"} and 0 <= results["brightness"]["mae"] < 1
    assert (tmp_path / "both" / "plots" / "samples_test.png").is_file()
    out = capsys.readouterr().out
    assert "brightness\n  mean abs error" in out  # the run's table labels it as the task says

    assert main(["compare", str(tmp_path / "both"), "--baselines", str(tmp_path / "single_seg"),
                 str(tmp_path / "single_bright"), "--out", str(tmp_path / "cmp.json")]) == 0
    table = capsys.readouterr().out
    assert "brightness mean abs error ↓" in table and "Δ brightness (%)" in table
    group = json.loads((tmp_path / "cmp.json").read_text())["groups"][-1]
    base = json.loads((tmp_path / "single_bright" / "metrics_test.json").read_text())["results"]["brightness"]["mae"]
    assert group["task_delta_m"]["brightness"]["mean"] == pytest.approx(-(results["brightness"]["mae"] - base) / base * 100)

    Image.fromarray(np.full((40, 80, 3), 200, np.uint8)).save(tmp_path / "grey.png")
    assert main(["predict", "--checkpoint", str(tmp_path / "both" / "checkpoints" / "best.ckpt"),
                 "--input", str(tmp_path / "grey.png"), "--out", str(tmp_path / "pred")]) == 0
    picture = np.asarray(Image.open(tmp_path / "pred" / "grey_brightness.png"))
    assert picture.shape == (40, 80, 3) and (tmp_path / "pred" / "grey_seg.png").is_file()


def test_a_registered_name_is_refused_twice_and_bad_values_are_named(registered, tmp_path):
    class Other(Brightness):
        pass

    with pytest.raises(ValueError, match="task 'brightness' is already registered"):
        register_task(Other)
    bad = BrightScenes(length=1, height=32, width=64).load(0)
    bad["brightness"][0, 0] = 2.0
    with pytest.raises(ValueError, match="sample 0: brightness has brightness outside \\[0, 1\\]"), \
            CacheWriter(tmp_path / "c", BrightScenes.info, (32, 64)) as writer:
        writer.write_split("train", 1, [bad])
