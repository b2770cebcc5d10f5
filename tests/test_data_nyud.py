"""NYUD-v2 as the multi-task references read it, in ATRC's layout and MTI-Net's: every target value
by value against the formats' definitions; splits, registry and errors."""
import numpy as np
import pytest
from PIL import Image

from crossvit_mtl.data.common import IGNORE_INDEX
from crossvit_mtl.data.errors import DataError
from crossvit_mtl.data.nyud import NYU40_CLASS_NAMES, NYU40_PALETTE, NYUDv2
from crossvit_mtl.data.registry import build_dataset
from fixtures_data import NYUD_IDS, write_nyud

SIZE = (12, 16)


def _read(path):
    with Image.open(path) as image:
        return np.asarray(image)


def test_atrc_layout_value_by_value(tmp_path):
    root = write_nyud(tmp_path / "n", size=SIZE)
    dataset = NYUDv2(root, "val")
    sample_id = NYUD_IDS["val"][1]
    sample = dataset.load(1)
    assert list(sample) == ["image", "segmentation", "depth", "normal", "edge"] and dataset.info.extra["layout"] == "atrc"
    np.testing.assert_array_equal(sample["image"], _read(root / "images" / f"{sample_id}.png"))

    # 40 classes: raw 0 (not annotated) -> 255, raw c -> c - 1
    raw = _read(root / "segmentation" / f"{sample_id}.png")
    assert raw.min() == 0 and raw.max() == 40
    seg = sample["segmentation"]
    assert seg.dtype == np.uint8
    np.testing.assert_array_equal(seg[raw == 0], IGNORE_INDEX)
    np.testing.assert_array_equal(seg[raw == 1], 0)
    np.testing.assert_array_equal(seg[raw == 40], 39)
    np.testing.assert_array_equal(seg[raw > 0], raw[raw > 0] - 1)

    depth = np.load(root / "depth" / f"{sample_id}.npy")
    np.testing.assert_array_equal(sample["depth"], depth)
    assert sample["depth"].dtype == np.float32 and (sample["depth"][0] == 0).all()

    rgb = _read(root / "normals" / f"{sample_id}.png").astype(np.float64)
    decoded = 2 * rgb / 255 - 1
    np.testing.assert_allclose(sample["normal"], decoded / np.linalg.norm(decoded, axis=-1, keepdims=True), atol=1e-6)
    assert sample["normal"].dtype == np.float32

    edge_png = _read(root / "edge" / f"{sample_id}.png")
    assert set(np.unique(edge_png)) == {0, 255}
    np.testing.assert_array_equal(sample["edge"], edge_png // 255)
    assert sample["edge"].dtype == np.uint8


def test_mti_net_layout(tmp_path):
    root = write_nyud(tmp_path / "n", size=SIZE, layout="mti-net")
    dataset = NYUDv2(root, "train")
    sample_id = NYUD_IDS["train"][0]
    assert dataset.info.extra["layout"] == "mti-net"
    assert dataset.paths(sample_id, ("normal", "edge")) == {
        "image": root / "images" / f"{sample_id}.jpg", "normal": root / "normals" / f"{sample_id}.npy",
        "edge": root / "edge" / f"{sample_id}.npy"}
    sample = dataset.load(0)
    with Image.open(root / "images" / f"{sample_id}.jpg") as jpeg:
        np.testing.assert_array_equal(sample["image"], np.asarray(jpeg.convert("RGB")))
    normals = np.load(root / "normals" / f"{sample_id}.npy")
    np.testing.assert_allclose(sample["normal"], normals, atol=1e-6)
    np.testing.assert_array_equal(sample["normal"][0], 0)  # zero vectors stay invalid
    np.testing.assert_array_equal(sample["edge"], np.load(root / "edge" / f"{sample_id}.npy").astype(np.uint8))


def test_info_registry_and_splits(tmp_path):
    root = write_nyud(tmp_path / "n", size=SIZE)
    dataset = build_dataset("nyud_v2", root, split="train", tasks=["depth"])
    assert isinstance(dataset, NYUDv2) and dataset.ids == NYUD_IDS["train"]
    assert list(dataset.load(0)) == ["image", "depth"]
    info = dataset.info
    assert info.name == "nyud_v2" and info.tasks == ("depth",) and info.depth_kind == "metric"
    assert info.num_classes == 40 and len(NYU40_PALETTE) == 40 and len(set(NYU40_PALETTE)) == 40
    assert NYU40_CLASS_NAMES[0] == "wall" and NYU40_CLASS_NAMES[-1] == "otherprop"
    assert info.task_options == {"edge": {"max_dist": 0.011}}
    # tensors through the base class for the tasks the project has today
    tensors = NYUDv2(root, "val", tasks=["segmentation", "depth", "normal"])[0]
    assert tensors["image"].shape == (3, *SIZE) and tensors["depth"].shape == (1, *SIZE)
    with pytest.raises(ValueError, match=r"NYUDv2 has no split 'test' \(choose from train, val;"):
        NYUDv2(root, "test")


def test_only_the_chosen_tasks_files_are_read(tmp_path):
    root = write_nyud(tmp_path / "n", size=SIZE)
    for folder in ("normals", "edge", "segmentation"):
        for path in (root / folder).iterdir():
            path.unlink()
    assert list(NYUDv2(root, "val", tasks=["depth"]).load(1)) == ["image", "depth"]
    with pytest.raises(DataError, match=r"normals/0001\.png: file not found \(normal of '0001', the first id"):
        NYUDv2(root, "val", tasks=["normal"])


@pytest.mark.parametrize("damage, pattern", [
    (lambda r: np.save(r / "depth" / "0001.npy", np.zeros((12, 16, 2), np.float32)),
     r"depth/0001\.npy: depth has shape \(12, 16, 2\), expected HxW or HxWx1"),
    (lambda r: np.save(r / "depth" / "0001.npy", np.full((12, 16), -1, np.float32)),
     r"depth/0001\.npy: negative depth \(min -1\); 0 marks invalid"),
    (lambda r: np.save(r / "depth" / "0001.npy", np.zeros((6, 16), np.float32)),
     r"depth/0001\.npy: size 6x16 differs from its image's 12x16"),
    (lambda r: Image.fromarray(np.full((12, 16), 41, np.uint8)).save(r / "segmentation" / "0001.png"),
     r"segmentation/0001\.png: label values \[41\] are outside 0\.\.40"),
    (lambda r: Image.fromarray(np.full((12, 16), 128, np.uint8)).save(r / "edge" / "0001.png"),
     r"edge/0001\.png: edge values \[128\] are neither 0 nor 255"),
    (lambda r: Image.fromarray(np.zeros((12, 16), np.uint8)).save(r / "normals" / "0001.png"),
     r"normals/0001\.png: expected an 8-bit RGB PNG, got mode L"),
    (lambda r: (r / "images" / "0001.png").write_bytes(b"\x89PNG\r\n"),
     r"images/0001\.png: cannot read image"),
])
def test_bad_files_fail_on_load_naming_them(tmp_path, damage, pattern):
    root = write_nyud(tmp_path / "n", size=SIZE)
    damage(root)
    with pytest.raises(DataError, match=pattern):
        NYUDv2(root, "val").load(0)


def test_construction_errors(tmp_path):
    root = write_nyud(tmp_path / "n", size=SIZE)
    (root / "images" / "0001.png").unlink()
    with pytest.raises(DataError, match=r"images/0001\.png: file not found, nor 0001\.jpg \(the image of '0001', "
                                        r"the first id of split 'val'\)$"):
        NYUDv2(root, "val")
    (root / "gt_sets" / "train.txt").write_text("\n")
    with pytest.raises(DataError, match=r"gt_sets/train\.txt: split file lists no ids$"):
        NYUDv2(root, "train")
