"""The MTAN-preprocessed Cityscapes and NYUv2 trees: label mapping, layouts, up-front errors."""
import shutil

import numpy as np
import pytest

from crossvit_mtl.data.cityscapes import label_mode
from crossvit_mtl.data.common import CATEGORY_NAMES, IGNORE_INDEX
from crossvit_mtl.data.errors import DataError
from crossvit_mtl.data.mtan import NYUV2_CLASS_NAMES, MTANCityscapes, MTANNYUv2
from fixtures_data import write_mtan_cityscapes, write_mtan_nyuv2


def _labels(root, split, i, folder="label_7"):
    return np.load(root / split / folder / f"{i}.npy")


def test_cityscapes_ignore_void(tmp_path):
    root = write_mtan_cityscapes(tmp_path / "m")
    ds = MTANCityscapes(root, "val")
    assert len(ds) == 2 and ds.info.num_classes == 7 and ds.info.class_names == CATEGORY_NAMES[1:]
    assert ds.info.depth_kind == "disparity" and ds.info.tasks == ("segmentation", "depth")
    raw, labels = ds.load(1), _labels(root, "val", 1)
    np.testing.assert_array_equal(raw["segmentation"], np.where(labels < 0, IGNORE_INDEX, labels))
    np.testing.assert_array_equal(raw["depth"], np.load(root / "val" / "depth" / "1.npy"))
    sample = ds[0]
    assert sample["image"].shape == (3, 8, 16) and sample["depth"].shape == (1, 8, 16)


def test_cityscapes_void_as_class(tmp_path):
    root = write_mtan_cityscapes(tmp_path / "m")
    ds = MTANCityscapes(root, "train", void_as_class=True)
    assert ds.info.class_names == CATEGORY_NAMES and ds.info.num_classes == 8
    np.testing.assert_array_equal(ds.load(2)["segmentation"], _labels(root, "train", 2) + 1)
    assert ds[0]["segmentation"].min() == 0 and ds[0]["segmentation"].max() == 7


def test_cityscapes_label_folders(tmp_path):
    write_mtan_cityscapes(tmp_path / "a", label_folder="label")
    assert MTANCityscapes(tmp_path / "a").info.extra["label_folder"] == "label"
    root = write_mtan_cityscapes(tmp_path / "b", label_folder="label_19", num_classes=19)
    write_mtan_cityscapes(root, label_folder="label_7")
    assert MTANCityscapes(root).info.extra["label_folder"] == "label_7"  # auto prefers label_7
    ds = MTANCityscapes(root, label_folder="label_19")
    assert ds.info.class_names == label_mode("train19").class_names
    np.testing.assert_array_equal(ds.load(0)["segmentation"] == IGNORE_INDEX, _labels(root, "train", 0, "label_19") < 0)
    with pytest.raises(ValueError, match="void_as_class needs the 7-class labels"):
        MTANCityscapes(root, label_folder="label_19", void_as_class=True)
    with pytest.raises(ValueError, match="label_folder 'label_2' is not one of"):
        MTANCityscapes(root, label_folder="label_2")


@pytest.mark.parametrize("layout", ["hw1", "1hw"])
def test_channel_first_images_and_depth_layouts(tmp_path, layout):
    root = write_mtan_cityscapes(tmp_path / "m", channels_first=True, depth_layout=layout)
    raw = MTANCityscapes(root).load(0)
    np.testing.assert_array_equal(raw["image"], np.load(root / "train" / "image" / "0.npy").transpose(1, 2, 0))
    assert raw["depth"].shape == (8, 16)


def test_nyuv2(tmp_path):
    root = write_mtan_nyuv2(tmp_path / "n")
    ds = MTANNYUv2(root, "val")
    assert ds.info.class_names == NYUV2_CLASS_NAMES and len(ds.info.palette) == 13
    assert ds.info.depth_kind == "metric" and ds.info.tasks == ("segmentation", "depth", "normal")
    sample = ds[1]
    assert sample["normal"].shape == (3, 12, 16) and sample["depth"].shape == (1, 12, 16)
    assert (sample["normal"][:, 0] == 0).all()
    norms = sample["normal"][:, 1:].norm(dim=0)
    assert ((norms - 1).abs() < 1e-5).all()
    assert set(MTANNYUv2(root, tasks=["normal"])[0]) == {"image", "normal"}


def _save(path, array):
    np.save(path, array)


@pytest.mark.parametrize("damage, message", [
    (lambda r: shutil.rmtree(r / "val"), "m/val: split folder missing (found: train)"),
    (lambda r: (r / "val" / "depth" / "1.npy").unlink(), "val/depth/1.npy: missing, but image/1.npy exists"),
    (lambda r: shutil.rmtree(r / "val" / "depth"), "val/depth: folder missing (needed for depth; found: image, label_7)"),
    (lambda r: _save(r / "val" / "image" / "x.npy", np.zeros(3)), "val/image/x.npy: file name is not an integer index"),
    (lambda r: _save(r / "val" / "image" / "0.npy", np.zeros((8, 16, 4), np.float32)),
     "val/image/0.npy: shape (8, 16, 4), expected HxWx3 or 3xHxW"),
    (lambda r: _save(r / "val" / "label_7" / "0.npy", np.zeros((4, 4), np.float32)),
     "val/label_7/0.npy: size 4x4 differs from the images' 8x16"),
    (lambda r: (r / "val" / "depth" / "0.npy").write_bytes(b"\x93NUMPY\x01\x00"), "val/depth/0.npy: not a readable .npy file"),
])
def test_layout_errors_at_construction(tmp_path, damage, message):
    root = write_mtan_cityscapes(tmp_path / "m")
    damage(root)
    with pytest.raises(DataError) as err:
        MTANCityscapes(root, "val")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("folder, array, message", [
    ("label_7", np.full((8, 16), 7, np.float32), "label values in [7, 7], expected -1 (not annotated) to 6"),
    ("label_7", np.full((8, 16), 0.5, np.float32), "labels contain NaN, Inf or non-integer values"),
    ("depth", np.full((8, 16), np.nan, np.float32), "depth contains NaN or Inf"),
    ("depth", np.full((8, 16), -1, np.float32), "negative disparity values"),
    ("image", np.full((8, 16, 3), 3.0, np.float32), "image values in [3, 3], expected floats in [0, 1]"),
    ("image", np.zeros((8, 16, 3), np.int32), "image has dtype int32, expected floating point"),
])
def test_content_errors_on_load(tmp_path, folder, array, message):
    root = write_mtan_cityscapes(tmp_path / "m")
    np.save(root / "train" / folder / "1.npy", array)
    ds = MTANCityscapes(root)
    ds.load(0)
    with pytest.raises(DataError) as err:
        ds.load(1)
    assert f"train/{folder}/1.npy: {message}" in str(err.value)


def test_nyuv2_normal_errors(tmp_path):
    root = write_mtan_nyuv2(tmp_path / "n")
    normal = np.load(root / "train" / "normal" / "0.npy")
    normal[3, 3, 0] = np.inf
    np.save(root / "train" / "normal" / "0.npy", normal)
    with pytest.raises(DataError, match="train/normal/0.npy: normal contains NaN or Inf"):
        MTANNYUv2(root)[0]
    np.save(root / "train" / "label" / "1.npy", np.full((12, 16), 13, np.float32))
    with pytest.raises(DataError, match="expected -1 \\(not annotated\\) to 12"):
        MTANNYUv2(root)[1]
