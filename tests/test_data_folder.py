"""Folder-per-class classification read with Pillow."""
import numpy as np
import pytest
from PIL import Image

from crossvit_mtl.data.errors import DataError
from crossvit_mtl.data.folder import ImageFolderDataset
from fixtures_data import write_image_folder


def test_classes_and_samples(tmp_path):
    root = write_image_folder(tmp_path / "f", {"train": {"dog": 2, "cat": 1, "bird": 1}, "val": {"dog": 1}})
    train, val = ImageFolderDataset(root, "train", size=(6, 9)), ImageFolderDataset(root, "val", size=(6, 9))
    assert train.info.scene_classes == val.info.scene_classes == ("bird", "cat", "dog")
    assert train.info.tasks == ("classification",) and train.info.task_channels() == {"classification": 3}
    assert [label for _, label in train.samples] == [0, 1, 2, 2]
    assert val[0]["classification"] == 2  # same index as in train although val has one class
    sample = train[3]
    assert sample["image"].shape == (3, 6, 9) and 0 <= sample["image"].min() <= sample["image"].max() <= 1


def test_png_pixels_kept_without_resize(tmp_path):
    root = write_image_folder(tmp_path / "f", {"train": {"a": 1}}, size=(5, 7))
    np.testing.assert_array_equal(ImageFolderDataset(root, size=(5, 7)).load(0)["image"],
                                  np.array(Image.open(root / "train" / "a" / "0.png")))


def test_errors(tmp_path):
    root = write_image_folder(tmp_path / "f", {"train": {"a": 2}})
    with pytest.raises(DataError, match="f/val: split folder missing"):
        ImageFolderDataset(root, "val")
    (root / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="f/empty: no .png/.jpg/.jpeg images in class sub-folders"):
        ImageFolderDataset(root, "empty")
    broken = root / "train" / "a" / "1.jpg"
    broken.write_bytes(broken.read_bytes()[:40])
    ds = ImageFolderDataset(root)
    with pytest.raises(DataError, match="a/1.jpg: cannot read image"):
        ds[1]
