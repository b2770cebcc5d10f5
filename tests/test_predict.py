"""`crossvit-mtl predict` on images of any size, by resizing and by sliding windows."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from crossvit_mtl.cli import main
from crossvit_mtl.engine.precision import resolve
from crossvit_mtl.inference import make_forward, predict_slide, window_starts


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, (h, w) in {"wide.png": (40, 150), "small.jpg": (20, 30)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / name)
    return folder


@pytest.mark.parametrize("mode", ["resize", "slide"])
def test_predict_writes_every_task_at_the_image_size(fitted_run, images, tmp_path, mode, capsys):
    ckpt = fitted_run / "checkpoints" / "last.ckpt"
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(images), "--out", str(tmp_path),
                 "--mode", mode, "--batch-size", "3"]) == 0
    captured = capsys.readouterr()
    assert f"predict ({mode})" in captured.err  # the progress bar
    # the device and precision chosen, and why
    assert any(line.startswith("predict on cpu (CPU), ") for line in captured.out.splitlines())
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
    out = predict_slide(make_forward(Echo()), x, (16, 32), 0.5, batch_size=4)
    torch.testing.assert_close(out["segmentation"], x * 2)
    torch.testing.assert_close(out["normal"], torch.nn.functional.normalize(x, dim=1))
    assert out["classification"].shape == (1, 3)
    small = torch.randn(1, 3, 10, 12)
    torch.testing.assert_close(predict_slide(make_forward(Echo()), small, (16, 32), 0.5, 2)["segmentation"], small * 2)


def test_forward_autocasts_to_the_asked_precision_and_returns_float32():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 4, 1))
    x = torch.randn(2, 3, 16, 24)
    with torch.no_grad():
        reference = net.double()(x.double()).float()
    net.float()
    fp32 = make_forward(net, "fp32")(x)["classification"]  # a bare tensor output is named
    bf16 = make_forward(net, "bf16")(x)["classification"]
    assert fp32.dtype == bf16.dtype == torch.float32 and not fp32.requires_grad
    torch.testing.assert_close(fp32, reference, rtol=1e-5, atol=1e-5)
    error = (bf16 - reference).abs().max()
    assert 0 < error < 0.02 * reference.abs().max()  # bf16 products: close, but not fp32's
    auto = make_forward(net, "auto")(x)["classification"]
    torch.testing.assert_close(auto, bf16 if resolve("cpu").precision == "bf16" else fp32, rtol=0, atol=0)
    with pytest.raises(ValueError, match="--precision fp16: fp16 autocast is for CUDA devices"):
        make_forward(net, "fp16")(x)


def test_predict_labels_agree_across_precisions(fitted_run, images, tmp_path):
    ckpt = fitted_run / "checkpoints" / "last.ckpt"
    labels = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        assert main(["predict", "--checkpoint", str(ckpt), "--input", str(images), "--out", str(out),
                     "--precision", precision]) == 0
        with Image.open(out / "wide_labels.png") as img:
            labels[precision] = np.asarray(img)
    assert (labels["fp32"] == labels["bf16"]).mean() > 0.9


def test_forward_pads_short_batches_to_a_fixed_size_and_drops_the_padding():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8)).eval()
    seen = []
    net.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    x = torch.randn(3, 3, 8, 12)
    padded = make_forward(net, "fp32", batch_size=5)(x)["classification"]
    plain = make_forward(net, "fp32")(x)["classification"]
    assert seen == [5, 3] and padded.shape == plain.shape == (3, 8, 8, 12)
    torch.testing.assert_close(padded, plain)


@pytest.mark.heavy
def test_predict_compiled_matches_eager_and_compiles_once(fitted_run, images, tmp_path):
    """--compile: the same labels as the eager network. Sliding windows come in chunks of 3 and
    a last, shorter chunk per image; padded to one batch shape, they need one compiled graph."""
    from torch._dynamo.utils import counters

    ckpt = fitted_run / "checkpoints" / "last.ckpt"
    torch._dynamo.reset()
    for flags in ([], ["--compile"]):
        out = tmp_path / ("compiled" if flags else "eager")
        assert main(["predict", "--checkpoint", str(ckpt), "--input", str(images), "--out", str(out),
                     "--mode", "slide", "--precision", "fp32", "--batch-size", "3", *flags]) == 0
    assert counters["stats"]["unique_graphs"] == 1
    for stem in ("wide", "small"):
        with Image.open(tmp_path / "eager" / f"{stem}_labels.png") as a, \
                Image.open(tmp_path / "compiled" / f"{stem}_labels.png") as b:
            assert (np.asarray(a) == np.asarray(b)).mean() > 0.99
