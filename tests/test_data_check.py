"""`data check`: every problem of a data set at once, in each format, and the command's exit codes."""
import argparse

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from crossvit_mtl.cli import UserError
from crossvit_mtl.cli import data as data_cli
from crossvit_mtl.data.check import check_dataset, detect_kind, scan
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


def _run(argv):
    parser = argparse.ArgumentParser()
    data_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["data", "check", *argv])
    return args.func(args)


def _assert_reports(problems, expected):
    assert len(problems) == len(expected), problems
    for fragment in expected:
        assert any(fragment in p for p in problems), (fragment, problems)
    assert all("\n" not in p for p in problems)


@pytest.mark.parametrize("writer, kind", [
    (write_cache, "cache"), (write_cityscapes, "cityscapes"), (write_mtan_cityscapes, "cityscapes_mtan"),
    (write_mtan_nyuv2, "nyuv2_mtan"), (write_image_folder, "folder"), (write_pascal_context, "pascal_context"),
    (write_nyud, "nyud_v2"), (lambda root: write_nyud(root, layout="mti-net"), "nyud_v2"),
])
def test_clean_data_sets(tmp_path, capsys, writer, kind):
    writer(tmp_path / "d")
    assert detect_kind(tmp_path / "d") == kind
    assert check_dataset(tmp_path / "d") == []
    assert _run([str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and f"{kind}, train" in out[0] and "no problems found" in out[0]


def test_cache_problems(tmp_path, capsys):
    write_cache(tmp_path / "c", {"train": 4, "val": 2})
    labels = np.load(tmp_path / "c" / "train" / "labels.npy", mmap_mode="r+")
    labels[1, 0, 0] = labels[3, 0, 0] = 12
    labels.flush()
    depth = np.load(tmp_path / "c" / "val" / "depth.npy", mmap_mode="r+")
    depth[1, 2, 2] = np.nan
    depth.flush()
    np.save(tmp_path / "c" / "val" / "classes.npy", np.array([0, 7]))
    (tmp_path / "c" / "train" / "normals.npy").write_bytes(b"x")
    for name, value in (("edges", 2), ("saliency", 128), ("parts", 7)):
        array = np.load(tmp_path / "c" / "train" / f"{name}.npy", mmap_mode="r+")
        array[2, 1, 1] = value
        array.flush()
        del array
    del labels, depth
    _assert_reports(check_dataset(tmp_path / "c"), [
        "train/labels.npy: 2 of 4 samples have label values outside 0..7 and 255 (first: sample 1)",
        "val/depth.npy: 1 of 2 samples have NaN, Inf or negative depth (first: sample 1)",
        "val/classes.npy: 1 of 2 samples have classes outside 0..2 and 255 (first: sample 1)",
        "train/normals.npy: not a .npy file",
        "train/edges.npy: 1 of 4 samples have values other than 0, 1 and 255 (an edge map is binary) (first: sample 2)",
        "train/saliency.npy: 1 of 4 samples have values other than 0, 1 and 255 (first: sample 2)",
        "train/parts.npy: 1 of 4 samples have label values outside 0..6 and 255 (first: sample 2)",
    ])
    assert _run([str(tmp_path / "c")]) == 1
    out = capsys.readouterr().out
    assert "7 problem(s) found" in out and "labels.npy" in out


def test_mtan_problems(tmp_path):
    root = write_mtan_cityscapes(tmp_path / "m", {"train": 4, "val": 2})
    (root / "train" / "depth" / "2.npy").unlink()
    np.save(root / "train" / "depth" / "1.npy", np.full((8, 16), np.inf, np.float32))
    np.save(root / "val" / "label_7" / "0.npy", np.full((8, 16), 9, np.float32))
    (root / "val" / "image" / "1.npy").write_bytes((root / "val" / "image" / "1.npy").read_bytes()[:150])
    _assert_reports(check_dataset(root), [
        "train/depth/2.npy: missing, but image/2.npy exists",
        "train/depth/1.npy: depth contains NaN or Inf",
        "val/label_7/0.npy: label values in [9, 9]",
        "val/image/1.npy: not a readable .npy file",
    ])


def test_nyuv2_problems(tmp_path):
    root = write_mtan_nyuv2(tmp_path / "n")
    np.save(root / "val" / "normal" / "1.npy", np.full((12, 16, 3), np.nan, np.float32))
    np.save(root / "train" / "label" / "0.npy", np.full((12, 16), -3, np.float32))
    _assert_reports(check_dataset(root, kind="nyuv2_mtan"), [
        "val/normal/1.npy: normal contains NaN or Inf", "train/label/0.npy: label values in [-3, -3]"])


def test_cityscapes_problems(tmp_path):
    root = write_cityscapes(tmp_path / "cs", {"train": 3, "val": 1})
    (root / "gtFine" / "train" / "aachen" / f"{cityscapes_stem(0)}_gtFine_labelIds.png").unlink()
    Image.fromarray(np.full((16, 32), 99, np.uint8)).save(
        root / "gtFine" / "train" / "aachen" / f"{cityscapes_stem(1)}_gtFine_labelIds.png")
    (root / "leftImg8bit" / "val" / "aachen" / f"{cityscapes_stem(0)}_leftImg8bit.png").write_bytes(b"\x89PNG")
    (root / "camera" / "train" / "aachen" / f"{cityscapes_stem(2)}_camera.json").write_text("{")
    _assert_reports(check_dataset(root), [
        f"{cityscapes_stem(0)}_leftImg8bit.png: no matching label file",
        f"{cityscapes_stem(1)}_gtFine_labelIds.png: label ids [99] are not Cityscapes label ids",
        f"{cityscapes_stem(0)}_leftImg8bit.png: cannot read image",
        f"{cityscapes_stem(2)}_camera.json: not a readable camera JSON file",
    ])


def test_pascal_context_problems(tmp_path):
    root = write_pascal_context(tmp_path / "pc")
    (root / "JPEGImages" / "2008_000015.jpg").unlink()
    save_label_png(root / "semseg" / "VOC12" / "2008_000002.png", np.full((12, 16), 33), palette=True)
    Image.fromarray(np.zeros((12, 15, 3), np.uint8)).save(root / "normals_distill" / "2008_000003.png")
    savemat(root / "pascal-context" / "trainval" / "2008_000007.mat", {"Labels": np.zeros((12, 16), np.uint16)})
    (root / "human_parts" / "2008_000008.mat").write_bytes(b"")
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(root / "sal_distill" / "2008_000008.png")
    report = scan(root)
    assert report.kind == "pascal_context" and report.counts == {"train": 2, "val": 3}
    # the LabelMap of 2008_000007 is missing for both its normals and its edges: named once
    _assert_reports(report.problems, [
        "JPEGImages/2008_000015.jpg: file not found",
        "human_parts/2008_000008.mat: not a readable MATLAB file",
        "sal_distill/2008_000008.png: expected a single-channel PNG (mode L or P), got mode RGB",
        "VOC12/2008_000002.png: label values [33] are outside 0..20 and 255",
        "normals_distill/2008_000003.png: size 12x15 differs from the LabelMap's 12x16",
        "trainval/2008_000007.mat: no variable 'LabelMap' (it holds: Labels)",
    ])


def test_pascal_context_missing_split_file(tmp_path):
    root = write_pascal_context(tmp_path / "pc")
    (root / "ImageSets" / "Context" / "val.txt").unlink()
    report = scan(root)
    assert report.counts == {"train": 2, "val": 0}
    _assert_reports(report.problems, ["ImageSets/Context/val.txt: split file not found"])


def test_nyud_problems(tmp_path):
    root = write_nyud(tmp_path / "n")
    np.save(root / "depth" / "0003.npy", np.zeros((12, 16, 3), np.float32))
    np.save(root / "depth" / "0001.npy", np.full((12, 16), np.nan, np.float32))
    Image.fromarray(np.full((12, 16), 41, np.uint8)).save(root / "segmentation" / "0004.png")
    (root / "edge" / "0002.png").unlink()
    Image.fromarray(np.zeros((10, 16, 3), np.uint8)).save(root / "normals" / "0002.png")
    _assert_reports(check_dataset(root), [
        "depth/0003.npy: depth has shape (12, 16, 3), expected HxW or HxWx1",
        "depth/0001.npy: depth contains NaN or Inf",
        "segmentation/0004.png: label values [41] are outside 0..40",
        "edge/0002.png: file not found",
        "normals/0002.png: size 10x16 differs from its image's 12x16",
    ])


def test_unknown_and_missing(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert scan(tmp_path / "empty").problems == [f"{tmp_path / 'empty'}: not a recognised data set layout (one of: cache, "
                                                 "cityscapes, cityscapes_mtan, nyuv2_mtan, folder, pascal_context, nyud_v2)"]
    assert check_dataset(tmp_path / "absent") == [f"{tmp_path / 'absent'}: folder not found"]
    with pytest.raises(UserError, match=r"^PATH \S+/absent: no such folder$"):  # the argument is wrong, not the data
        _run([str(tmp_path / "absent")])
