"""PASCAL-Context as the multi-task references read it: every target value by value against what
their loaders produce, derived here by hand from the formats' definitions; splits and errors."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from crossvit_mtl.data.common import IGNORE_INDEX
from crossvit_mtl.data.errors import DataError
from crossvit_mtl.data.pascal_context import (
    EDGE_EXCLUDED_IDS,
    NORMALS_VALID_CLASSES,
    VOC_PALETTE,
    PascalContext,
    edges_from_labels,
)
from crossvit_mtl.data.registry import build_dataset
from crossvit_mtl.tasks import get_task
from crossvit_mtl.tasks.human_parts import PART_NAMES
from fixtures_data import (
    CONTEXT,
    PASCAL_IDS,
    pascal_person,
    save_label_png,
    save_part_annotation,
    voc_palette,
    write_pascal_context,
)

SIZE = (12, 16)


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def _decoded_unit(rgb: np.ndarray) -> np.ndarray:
    vectors = 2.0 * rgb.astype(np.float64) / 255.0 - 1.0
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def test_every_target_of_a_sample(tmp_path):
    root = write_pascal_context(tmp_path / "pc", size=SIZE)
    first = PASCAL_IDS["val"][0]
    # saliency at the threshold: 127/255 < 0.5 <= 128/255
    saliency = np.zeros(SIZE, np.uint8)
    saliency[:, :4], saliency[:, 4:8], saliency[:, 8:12] = 127, 128, 255
    Image.fromarray(saliency).save(root / "sal_distill" / f"{first}.png")
    sample = PascalContext(root, "val").load(0)

    assert list(sample) == ["image", "segmentation", "human_parts", "saliency", "normal", "edge"]
    with Image.open(root / "JPEGImages" / f"{first}.jpg") as jpeg:
        np.testing.assert_array_equal(sample["image"], np.asarray(jpeg.convert("RGB")))
    assert sample["image"].dtype == np.uint8 and sample["image"].shape == (*SIZE, 3)

    # segmentation: the palette PNG's indices (0..20, 255), not its colours
    expected = ((np.arange(SIZE[0] * SIZE[1])) % 22).reshape(SIZE)
    expected[expected == 21] = IGNORE_INDEX
    np.testing.assert_array_equal(sample["segmentation"], expected)
    assert sample["segmentation"].dtype == np.uint8

    # human parts: head -> 1, torso -> 2, lhand -> lower arm 4, rfoot -> lower leg 6; the rest of
    # the person, the dog (no parts) and the background are 0
    parts = np.zeros(SIZE, np.uint8)
    parts[1, 2:-2], parts[2, 2:-2], parts[3, 2:-2], parts[4, 2:-2] = 1, 2, 4, 6
    np.testing.assert_array_equal(sample["human_parts"], parts)
    assert PART_NAMES[4] == "lower arm" and PART_NAMES[6] == "lower leg"

    np.testing.assert_array_equal(sample["saliency"][:, :4], 0)
    np.testing.assert_array_equal(sample["saliency"][:, 4:12], 1)
    np.testing.assert_array_equal(sample["saliency"][:, 12:], 0)

    # normals: kept on wall (440) and tvmonitor (427), zero on sky (360, not an NYU class) and on
    # row 0 (0, unlabelled)
    rgb = _png(root / "normals_distill" / f"{first}.png")
    third = SIZE[1] // 3
    valid = np.zeros(SIZE, bool)
    valid[1:, :third] = valid[1:, 2 * third:] = True
    np.testing.assert_allclose(sample["normal"][valid], _decoded_unit(rgb)[valid], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(sample["normal"][~valid], 0)
    assert sample["normal"].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(sample["normal"][valid], axis=-1), 1, atol=1e-6)

    # edges: on the borders of the LabelMap's regions (row 0 / row 1 and the two column borders)
    edge = sample["edge"]
    assert edge.dtype == np.uint8 and set(np.unique(edge)) == {0, 1}
    near_border = np.zeros(SIZE, bool)
    near_border[:2] = True
    for col in (third, 2 * third):
        near_border[:, col - 1:col + 1] = True
    assert not edge[~near_border].any()


def test_no_person_or_person_without_parts_is_ignored_everywhere(tmp_path):
    root = write_pascal_context(tmp_path / "pc", size=SIZE)
    dataset = PascalContext(root, "val", tasks=["human_parts"])
    # the second id has only a dog, with a part: never scored as background
    np.testing.assert_array_equal(dataset.load(1)["human_parts"], IGNORE_INDEX)
    # a person whose parts are not annotated, as the references' AddIgnoreRegions: all 255
    person, _ = pascal_person(SIZE)
    save_part_annotation(root / "human_parts" / f"{dataset.ids[2]}.mat", dataset.ids[2], [("person", 15, person, {})])
    np.testing.assert_array_equal(dataset.load(2)["human_parts"], IGNORE_INDEX)
    # no object at all
    save_part_annotation(root / "human_parts" / f"{dataset.ids[2]}.mat", dataset.ids[2], [])
    np.testing.assert_array_equal(dataset.load(2)["human_parts"], IGNORE_INDEX)


def test_every_person_part_maps_as_the_reference_table(tmp_path):
    root = write_pascal_context(tmp_path / "pc", ids={"val": ["2008_000002"]}, size=(6, 24))
    names = ["head", "hair", "lear", "rear", "lebrow", "rebrow", "leye", "reye", "nose", "mouth", "neck", "torso",
             "luarm", "ruarm", "llarm", "rlarm", "lhand", "rhand", "luleg", "ruleg", "llleg", "rlleg", "lfoot", "rfoot"]
    expected = [1] * 10 + [2, 2, 3, 3, 4, 4, 4, 4, 5, 5, 6, 6, 6, 6]
    masks = {name: np.zeros((6, 24), bool) for name in names}
    for col, name in enumerate(names):
        masks[name][0, col] = True
    person = np.ones((6, 24), bool)
    # two people: the second one's parts are drawn after the first's, as the references loop
    save_part_annotation(root / "human_parts" / "2008_000002.mat", "2008_000002",
                         [("person", 15, person, {n: masks[n] for n in names[:12]}),
                          ("person", 15, person, {n: masks[n] for n in names[12:]})])
    np.testing.assert_array_equal(PascalContext(root, "val", tasks=["human_parts"]).load(0)["human_parts"][0], expected)


def test_unknown_part_name_is_named(tmp_path):
    root = write_pascal_context(tmp_path / "pc", ids={"val": ["2008_000002"]}, size=SIZE)
    person, _ = pascal_person(SIZE)
    save_part_annotation(root / "human_parts" / "2008_000002.mat", "2008_000002",
                         [("person", 15, person, {"tail": person})])
    with pytest.raises(DataError, match=r"human_parts/2008_000002\.mat: object 1: person part 'tail' is not a "
                                        r"PASCAL-Part person part"):
        PascalContext(root, "val").load(0)


def test_edges_of_two_regions_are_one_pixel_wide_on_their_border():
    labels = np.full((10, 12), CONTEXT["wall"])
    labels[:, 6:] = CONTEXT["sky"]
    edge = edges_from_labels(labels)
    # the Laplacian marks columns 5 and 6; thinning keeps one pixel a row, on that border
    assert set(np.flatnonzero(edge.any(0))) <= {5, 6}
    assert edge.sum(1).max() == 1 and edge.sum() >= labels.shape[0] - 1


def test_edges_are_the_laplacian_not_any_neighbour_difference():
    # a ramp: every pixel differs from its left and right neighbours, but the Laplacian (left +
    # right + up + down - 4 x centre) is 0 inside; at the mirrored borders 2 x (neighbour - self)
    ramp = np.tile(np.arange(1, 6), (5, 1))
    expected = np.zeros((5, 5), np.uint8)
    expected[:, 0] = expected[:, 4] = 1
    np.testing.assert_array_equal(edges_from_labels(ramp), expected)
    # the border is mirrored without repeating the edge pixel (OpenCV's default): at (0, 2) the
    # row gives 1 + 1 - 2 x 2 = -2 and the column, mirrored, 2 x (3 - 2) = +2: no edge (repeating
    # the edge pixel would give -2 + 1 and mark it)
    labels = np.array([[9, 1, 2, 1, 9],
                       [9, 9, 3, 9, 9],
                       [9, 9, 9, 9, 9]])
    assert edges_from_labels(labels)[0, 2] == 0


def test_semseg_falls_back_to_the_pascal_context_folder(tmp_path):
    root = write_pascal_context(tmp_path / "pc", size=SIZE)
    second = PASCAL_IDS["val"][1]
    assert not (root / "semseg" / "VOC12" / f"{second}.png").exists()
    assert _png(root / "semseg" / "pascal-context" / f"{second}.png").ndim == 2  # mode L
    expected = ((np.arange(SIZE[0] * SIZE[1]) + 1) % 22).reshape(SIZE)
    expected[expected == 21] = IGNORE_INDEX
    np.testing.assert_array_equal(PascalContext(root, "val", tasks=["segmentation"]).load(1)["segmentation"], expected)
    # VOC12 wins when both exist
    save_label_png(root / "semseg" / "VOC12" / f"{second}.png", np.full(SIZE, 7), palette=True)
    np.testing.assert_array_equal(PascalContext(root, "val", tasks=["segmentation"]).load(1)["segmentation"], 7)


def test_tables_are_the_references():
    assert tuple(zip(*[iter(voc_palette(21))] * 3)) == VOC_PALETTE
    assert len(NORMALS_VALID_CLASSES) == len(set(NORMALS_VALID_CLASSES.values()))
    assert NORMALS_VALID_CLASSES["tvmonitor"] == 427 and NORMALS_VALID_CLASSES["wall"] == 440
    assert "unknown" not in NORMALS_VALID_CLASSES and "sky" not in NORMALS_VALID_CLASSES


def test_val_edge_is_val_without_cobs_validation_ids(tmp_path):
    root = write_pascal_context(tmp_path / "pc", size=SIZE)
    assert PascalContext(root, "val_edge").ids == ["2008_000003", "2008_000007"]
    from importlib import resources

    lines = (resources.files("crossvit_mtl.data") / EDGE_EXCLUDED_IDS).read_text().splitlines()
    ids = [line for line in lines if line and not line.startswith("#")]
    # COB's voc_val.txt: 2607 sorted, unique VOC ids from 2008_000002 to 2010_006086
    assert len(ids) == len(set(ids)) == 2607 and ids == sorted(ids)
    assert ids[0] == "2008_000002" and ids[-1] == "2010_006086"
    assert all(len(i) == 11 and i[4] == "_" and i[:4] in ("2008", "2009", "2010") for i in ids)


def test_images_keep_their_own_size(tmp_path):
    root = write_pascal_context(tmp_path / "a", ids={"val": ["2008_000002"]}, size=(10, 14))
    write_pascal_context(tmp_path / "b", ids={"val": ["2008_000003"]}, size=(13, 9), seed=1)
    for path in (tmp_path / "b").rglob("*2008_000003*"):
        target = root / path.relative_to(tmp_path / "b")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    (root / "ImageSets" / "Context" / "val.txt").write_text("2008_000002\n2008_000003\n")
    dataset = PascalContext(root, "val")
    shapes = [{k: v.shape[:2] for k, v in dataset.load(i).items()} for i in range(2)]
    assert shapes == [dict.fromkeys(PascalContext.TASKS + ("image",), (10, 14)),
                      dict.fromkeys(PascalContext.TASKS + ("image",), (13, 9))]


def test_only_the_chosen_tasks_files_are_read(tmp_path):
    root = write_pascal_context(tmp_path / "pc", size=SIZE)
    for folder in ("human_parts", "sal_distill", "normals_distill", "pascal-context"):
        shutil.rmtree(root / folder)
    dataset = PascalContext(root, "train", tasks=("segmentation",))
    assert dataset.info.tasks == ("segmentation",) and list(dataset.load(1)) == ["image", "segmentation"]
    with pytest.raises(DataError, match=r"human_parts/2008_000008\.mat: file not found \(human_parts of "
                                        r"'2008_000008', the first id of split 'train'\)"):
        PascalContext(root, "train", tasks=("human_parts",))


def test_info_and_registry(tmp_path):
    root = write_pascal_context(tmp_path / "pc", size=SIZE)
    dataset = build_dataset("pascal_context", root, split="val", tasks=["segmentation", "edge"])
    assert isinstance(dataset, PascalContext) and len(dataset) == 3
    info = dataset.info
    assert info.name == "pascal_context" and info.tasks == ("segmentation", "edge") and info.num_classes == 21
    assert info.task_options == {"edge": {"max_dist": 0.0075}}
    assert get_task("human_parts").class_names(info.as_meta()) == PART_NAMES
    with pytest.raises(ValueError, match=r"data set 'pascal_context' has no option\(s\) 'size' \(accepted: tasks\)"):
        build_dataset("pascal_context", root, size=[8, 8])


def test_construction_errors_name_the_file(tmp_path):
    root = write_pascal_context(tmp_path / "pc", size=SIZE)
    with pytest.raises(ValueError, match=r"PascalContext has no split 'test' \(choose from train, val, val_edge; "
                                         r"the benchmark's test labels are not public"):
        PascalContext(root, "test")
    with pytest.raises(ValueError, match=r"PascalContext has no task\(s\) 'depth' \(it provides: segmentation, "
                                         r"human_parts, saliency, normal, edge\)"):
        PascalContext(root, "val", tasks=["depth"])
    (root / "ImageSets" / "Context" / "val.txt").write_text("2008_000002\n2008_000003\n\n2008_000002\n")
    with pytest.raises(DataError, match=r"Context/val\.txt: id '2008_000002' is listed twice \(lines 1 and 4\)$"):
        PascalContext(root, "val")
    (root / "ImageSets" / "Context" / "train.txt").unlink()
    with pytest.raises(DataError, match=r"Context/train\.txt: split file not found$"):
        PascalContext(root, "train")
    (root / "JPEGImages" / "2008_000003.jpg").unlink()
    (root / "ImageSets" / "Context" / "val.txt").write_text("2008_000003\n")
    with pytest.raises(DataError, match=r"JPEGImages/2008_000003\.jpg: file not found \(image of '2008_000003', "
                                        r"the first id of split 'val'\)$"):
        PascalContext(root, "val")
    with pytest.raises(DataError, match=r"nowhere: data set folder not found"):
        PascalContext(tmp_path / "nowhere")


@pytest.mark.parametrize("damage, pattern", [
    (lambda r: savemat(r / "pascal-context" / "trainval" / "2008_000002.mat", {"Labels": np.zeros(SIZE)}),
     r"trainval/2008_000002\.mat: no variable 'LabelMap' \(it holds: Labels\)"),
    (lambda r: save_label_png(r / "semseg" / "VOC12" / "2008_000002.png", np.full(SIZE, 21), palette=True),
     r"VOC12/2008_000002\.png: label values \[21\] are outside 0\.\.20 and 255"),
    (lambda r: Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(r / "normals_distill" / "2008_000002.png"),
     r"normals_distill/2008_000002\.png: size 5x5 differs from the LabelMap's 12x16"),
    (lambda r: (r / "human_parts" / "2008_000002.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200)),
     r"human_parts/2008_000002\.mat: not a readable MATLAB file"),
])
def test_bad_files_fail_on_load_naming_them(tmp_path, damage, pattern):
    root = write_pascal_context(tmp_path / "pc", size=SIZE)
    damage(root)
    with pytest.raises(DataError, match=pattern):
        PascalContext(root, "val").load(0)
