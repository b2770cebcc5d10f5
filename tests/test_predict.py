"""`crossvit-mtl predict` on images of any size, by resizing and by sliding windows."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from crossvit_mtl.cli import main
from crossvit_mtl.cli.predict import predict_slide, window_starts
from fixtures_run import tiny_run


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, (h, w) in {"wide.png": (40, 150), "small.jpg": (20, 30)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / name)
    return folder


@pytest.mark.parametrize("mode", ["resize", "slide"])
def test_predict_writes_every_task_at_the_image_size(tmp_path_factory, images, tmp_path, mode, capsys):
    ckpt = tiny_run(tmp_path_factory) / "checkpoints" / "last.ckpt"
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(images), "--out", str(tmp_path),
                 "--mode", mode, "--batch-size", "3"]) == 0
    assert f"predict ({mode})" in capsys.readouterr().err  # the progress bar
    for stem, size in (("wide", (150, 40)), ("small", (30, 20))):
        for suffix in ("seg", "overlay", "labels", "depth", "depth_mm", "normal"):
            with Image.open(tmp_path / f"{stem}_{suffix}.png") as img:
                assert img.size == size, (stem, suffix)
        with Image.open(tmp_path / f"{stem}_labels.png") as labels:
            assert np.asarray(labels).max() < 8
        with Image.open(tmp_path / f"{stem}_depth_mm.png") as depth:
            assert depth.mode.startswith("I;16") or depth.mode == "I"
    records = json.loads((tmp_path / "predictions.json").read_text())
    assert [r["image"] for r in records] == ["small", "wide"] and all("class" in r for r in records)


def test_window_starts_cover_the_image_with_overlap():
    assert window_starts(64, 64, 0.5) == [0]
    assert window_starts(150, 64, 1 / 3) == [0, 42, 84, 86]
    assert window_starts(20, 64, 0.5) == [0]


def test_slide_averages_overlapping_windows_exactly():
    """A model that outputs its input: sliding must give back the image itself (and the mean
    of the windows' class logits), whatever the overlap and padding."""
    class Echo(torch.nn.Module):
        def forward(self, x):
            return {"segmentation": x * 2, "normal": x, "classification": x.mean((2, 3))}

    x = torch.randn(1, 3, 37, 90)
    out = predict_slide(Echo(), x, (16, 32), 0.5, batch_size=4)
    torch.testing.assert_close(out["segmentation"], x * 2)
    torch.testing.assert_close(out["normal"], torch.nn.functional.normalize(x, dim=1))
    assert out["classification"].shape == (1, 3)
    small = torch.randn(1, 3, 10, 12)
    torch.testing.assert_close(predict_slide(Echo(), small, (16, 32), 0.5, 2)["segmentation"], small * 2)
