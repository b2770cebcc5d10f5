"""`data check`: every problem of a data set at once, in each format, and the command's exit codes."""
import argparse

import numpy as np
import pytest
from PIL import Image

from crossvit_mtl.cli import UserError
from crossvit_mtl.cli import data as data_cli
from crossvit_mtl.data.check import check_dataset, detect_kind, scan
from fixtures_data import cityscapes_stem, write_cache, write_cityscapes, write_image_folder, write_mtan_cityscapes, write_mtan_nyuv2


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
    (write_mtan_nyuv2, "nyuv2_mtan"), (write_image_folder, "folder"),
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


def test_unknown_and_missing(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert scan(tmp_path / "empty").problems == [f"{tmp_path / 'empty'}: not a recognised data set layout "
                                                 "(one of: cache, cityscapes, cityscapes_mtan, nyuv2_mtan, folder)"]
    assert check_dataset(tmp_path / "absent") == [f"{tmp_path / 'absent'}: folder not found"]
    with pytest.raises(UserError, match=r"^PATH \S+/absent: no such folder$"):  # the argument is wrong, not the data
        _run([str(tmp_path / "absent")])
