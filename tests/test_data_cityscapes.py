"""Cityscapes official layout: label tables from cityscapesscripts, depth from disparity, conversion."""
import argparse
import json

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import labels as official
from cityscapesscripts.helpers.labels import trainId2label
from PIL import Image

from crossvit_mtl.cli import UserError
from crossvit_mtl.cli import data as data_cli
from crossvit_mtl.data.cache import CachedDataset
from crossvit_mtl.data.cityscapes import convert_cityscapes, label_mode, read_depth, read_labels
from crossvit_mtl.data.common import CATEGORY_NAMES, CATEGORY_PALETTE, IGNORE_INDEX
from crossvit_mtl.data.errors import DataError
from fixtures_data import CAMERA, cityscapes_stem, write_cityscapes

BF = CAMERA["extrinsic"]["baseline"] * CAMERA["intrinsic"]["fx"]


def test_every_official_id_maps_to_the_right_class():
    modes = {m: label_mode(m) for m in ("category8", "mtan7", "train19")}
    for label in official:
        if label.id < 0:  # licence plate: never stored in labelIds PNGs
            continue
        assert modes["category8"].lut[label.id] == label.categoryId, label.name
        assert modes["mtan7"].lut[label.id] == (IGNORE_INDEX if label.category == "void" else label.categoryId - 1)
        assert modes["train19"].lut[label.id] == (label.trainId if 0 <= label.trainId < 19 else IGNORE_INDEX)
    assert all((modes[m].lut[34:] == -1).all() for m in modes)  # not Cityscapes ids


def test_class_names_and_palettes():
    assert label_mode("category8").class_names == CATEGORY_NAMES
    assert label_mode("category8").palette == CATEGORY_PALETTE
    assert label_mode("mtan7").class_names == CATEGORY_NAMES[1:]
    train19 = label_mode("train19")
    assert train19.class_names == tuple(trainId2label[i].name for i in range(19))
    assert train19.palette == tuple(trainId2label[i].color for i in range(19))
    with pytest.raises(ValueError, match="unknown Cityscapes label mode 'category7'"):
        label_mode("category7")


def test_depth_from_disparity_by_hand(tmp_path):
    raw = np.array([[0, 1, 257, 513], [2561, 65535, 129, 0]], np.uint16)
    Image.fromarray(raw).save(tmp_path / "d.png")
    (tmp_path / "c.json").write_text(json.dumps(CAMERA))
    depth = read_depth(tmp_path / "d.png", tmp_path / "c.json")
    expected = [[0, 0, BF / 1.0, BF / 2.0], [BF / 10.0, BF / (65534 / 256), BF / 0.5, 0]]
    np.testing.assert_allclose(depth, expected, rtol=1e-6)
    assert depth.dtype == np.float32


def test_labels_outside_the_table(tmp_path):
    Image.fromarray(np.array([[7, 40], [200, 0]], np.uint8)).save(tmp_path / "x_gtFine_labelIds.png")
    with pytest.raises(DataError, match=r"x_gtFine_labelIds.png: label ids \[40, 200\] are not Cityscapes"):
        read_labels(tmp_path / "x_gtFine_labelIds.png", label_mode("category8").lut)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "y_gtFine_labelIds.png")
    with pytest.raises(DataError, match="expected a single-channel 8-bit labelIds PNG"):
        read_labels(tmp_path / "y_gtFine_labelIds.png", label_mode("category8").lut)


@pytest.mark.parametrize("mode", ["category8", "mtan7", "train19"])
def test_convert(tmp_path, mode):
    src = write_cityscapes(tmp_path / "cs", {"train": 2, "val": 1}, size=(16, 32))
    convert_cityscapes(src, tmp_path / "out", size=(8, 16), labels=mode)
    ds = CachedDataset(tmp_path / "out", "train")
    assert len(ds) == 2 and len(CachedDataset(tmp_path / "out", "val")) == 1
    assert ds.info.tasks == ("segmentation", "depth") and ds.info.class_names == label_mode(mode).class_names
    assert ds.info.name == f"cityscapes-{mode}" and ds.info.depth_kind == "metric"
    split_dir = src / "gtFine" / "train" / "aachen"
    ids = np.array(Image.open(split_dir / f"{cityscapes_stem(1)}_gtFine_labelIds.png"))
    nearest = np.array(Image.fromarray(ids).resize((16, 8), Image.Resampling.NEAREST))
    raw = ds.load(1)
    np.testing.assert_array_equal(raw["segmentation"], label_mode(mode).lut[nearest])
    # depth: disparity -> metres at full resolution, then nearest, so invalid pixels stay 0
    disparity = np.array(Image.open(src / "disparity" / "train" / "aachen" / f"{cityscapes_stem(1)}_disparity.png"))
    full = np.zeros(disparity.shape, np.float32)
    full[disparity > 1] = BF / ((disparity[disparity > 1].astype(np.float64) - 1) / 256)
    expected = np.array(Image.fromarray(full, mode="F").resize((16, 8), Image.Resampling.NEAREST))
    np.testing.assert_allclose(raw["depth"], expected, rtol=1e-5)
    assert (raw["depth"] == 0).any() and raw["image"].shape == (8, 16, 3)


def test_without_disparity_only_segmentation(tmp_path):
    src = write_cityscapes(tmp_path / "cs", {"train": 1}, depth=False)
    convert_cityscapes(src, tmp_path / "out", size=(8, 16), splits=["train"])
    assert CachedDataset(tmp_path / "out", "train").info.tasks == ("segmentation",)


def _stem_path(root, folder, split, suffix, i=0):
    return root / folder / split / "aachen" / f"{cityscapes_stem(i)}_{suffix}"


@pytest.mark.parametrize("damage, message", [
    (lambda r: _stem_path(r, "gtFine", "train", "gtFine_labelIds.png", 1).unlink(),
     f"{cityscapes_stem(1)}_leftImg8bit.png: no matching label file"),
    (lambda r: _stem_path(r, "camera", "val", "camera.json").unlink(),
     f"{cityscapes_stem(0)}_leftImg8bit.png: no matching camera file"),
    (lambda r: _stem_path(r, "leftImg8bit", "train", "leftImg8bit.png").unlink(),
     f"{cityscapes_stem(0)}_gtFine_labelIds.png: no matching image file"),
    (lambda r: __import__("shutil").rmtree(r / "gtFine" / "val"), "gtFine/val: folder missing"),
    (lambda r: _stem_path(r, "leftImg8bit", "train", "leftImg8bit.png").write_bytes(
        _stem_path(r, "leftImg8bit", "train", "leftImg8bit.png").read_bytes()[:100]),
     f"{cityscapes_stem(0)}_leftImg8bit.png: cannot read image"),
    (lambda r: _stem_path(r, "camera", "train", "camera.json").write_text('{"extrinsic": {}}'),
     f"{cityscapes_stem(0)}_camera.json: camera file lacks extrinsic.baseline"),
    (lambda r: Image.fromarray(np.full((16, 32), 50, np.uint8)).save(
        _stem_path(r, "gtFine", "train", "gtFine_labelIds.png", 1)),
     f"{cityscapes_stem(1)}_gtFine_labelIds.png: label ids [50] are not Cityscapes label ids"),
    (lambda r: Image.fromarray(np.zeros((8, 8), np.uint8)).save(
        _stem_path(r, "gtFine", "train", "gtFine_labelIds.png", 1)),
     f"{cityscapes_stem(1)}_gtFine_labelIds.png: size (8, 8) differs from its image (16, 32)"),
])
def test_bad_input_names_the_file(tmp_path, damage, message):
    src = write_cityscapes(tmp_path / "cs", {"train": 2, "val": 1})
    damage(src)
    with pytest.raises(DataError) as err:
        convert_cityscapes(src, tmp_path / "out", size=(8, 16))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="nothing: Cityscapes root folder not found"):
        convert_cityscapes(tmp_path / "nothing", tmp_path / "out")


def _run(argv):
    parser = argparse.ArgumentParser()
    data_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli(tmp_path, capsys):
    src = write_cityscapes(tmp_path / "cs", {"train": 1, "val": 1})
    argv = ["data", "cityscapes", "--root", str(src), "--out", str(tmp_path / "out"), "--size", "8x16",
            "--labels", "mtan7"]
    assert _run(argv) == 0
    assert "wrote" in capsys.readouterr().out
    assert CachedDataset(tmp_path / "out", "val").info.num_classes == 7
    with pytest.raises(UserError, match="already exists"):
        _run(argv)
    assert _run(argv + ["--overwrite"]) == 0
    with pytest.raises(UserError, match="leftImg8bit/test: folder missing"):
        _run(argv + ["--overwrite", "--splits", "test"])
