"""Boundary-detection scores (tasks/edge_eval.py, crossvit-mtl edges): hand-built cases whose
matching is known, the exact matching against a brute-force assignment, the thinning against
scikit-image, SEISM's summary conventions, an independent evaluator (pyEdgeEval) where installed,
and the command on small folders of real PNG and MATLAB files."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from scipy.io import savemat
from scipy.optimize import linear_sum_assignment
from skimage.morphology import thin

from crossvit_mtl.cli import main
from crossvit_mtl.tasks.edge_eval import (
    HED_THRESHOLDS,
    MTINET_THRESHOLDS,
    PROTOCOLS,
    best_counts,
    edge_counts,
    edge_orientation,
    edges_nms,
    match_count,
    precision_recall,
    seg2bmap,
    summarize,
    thin_binary,
)


def scene(seed: int, h: int = 48, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A label map of overlapping rectangles and discs, and an 8-bit soft prediction of its
    boundaries: blurred, partly shifted, partly missing, with clutter and a noise floor."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((h, w), np.int32)
    yy, xx = np.mgrid[:h, :w]
    for k in range(1, 7):
        y0, x0 = rng.integers(0, h - 8), rng.integers(0, w - 8)
        if k % 2:
            labels[y0:y0 + rng.integers(6, h // 2), x0:x0 + rng.integers(6, w // 2)] = k
        else:
            labels[(yy - y0) ** 2 + (xx - x0) ** 2 < rng.integers(16, 150)] = k
    bmap = seg2bmap(labels).astype(float)
    shifted = np.roll(bmap, tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
    soft = ndimage.gaussian_filter(0.7 * bmap + 0.3 * shifted, 1.2) * (0.3 + rng.random((h, w)))
    soft += 2 * ndimage.gaussian_filter((rng.random((h, w)) < 0.01).astype(float), 1.5) + 0.03 * rng.random((h, w))
    return labels, np.round(255 * soft / soft.max()).astype(np.uint8)


# ----------------------------------------------------------------------------- ground truth, thinning, NMS


def test_seg2bmap_marks_the_pixel_before_each_label_change():
    labels = np.array([[1, 1, 2], [1, 1, 2], [3, 3, 3]])
    assert seg2bmap(labels).tolist() == [[False, True, False], [True, True, True], [False, False, False]]
    split = np.zeros((5, 5), int)
    split[:, 3:] = 1
    expected = np.zeros((5, 5), bool)
    expected[:, 2] = True  # the last row compares with its east neighbour only, and differs
    assert np.array_equal(seg2bmap(split), expected)
    assert not seg2bmap(np.full((4, 6), 7)).any()


def test_thinning_is_scikit_images_bwmorph_thin():
    rng = np.random.default_rng(3)
    cases = [np.ones((9, 13), bool), np.zeros((5, 5), bool), rng.random((1, 30)) < 0.7]
    cases += [rng.random(rng.integers(3, 40, 2)) < rng.uniform(0.1, 0.9) for _ in range(60)]
    cases += [ndimage.binary_dilation(seg2bmap(scene(s)[0]), iterations=2) for s in range(3)]
    for binary in cases:
        assert np.array_equal(thin_binary(binary), thin(binary))


def test_nms_thins_a_blurred_ridge_to_one_pixel_at_its_crest():
    yy, xx = np.mgrid[:40, :50].astype(np.float32)
    vertical = np.exp(-((xx - 23) ** 2) / 8)
    out = edges_nms(vertical)
    inner = out[5:-5, 5:-5]  # within 5 pixels of the border values are scaled down, not suppressed
    assert (np.count_nonzero(inner, axis=1) == 1).all() and (np.argmax(inner, axis=1) == 23 - 5).all()
    assert inner[:, 23 - 5] == pytest.approx(1.0)
    angle = edge_orientation(vertical)[5:-5, 23]
    assert np.abs(np.sin(angle)).max() < 1e-3  # the normal of a vertical ridge points along x
    # Dollar's coarse normal atan(Oyy sign(-Oxy) / Oxx) is exact at 0 and 45 degrees only: on the
    # ridge x - 2y = c it is pi - atan(4) (the true normal would be pi - atan(2))
    slanted = edge_orientation(np.exp(-((xx - 2 * yy + 30) ** 2) / 2 / 36))[10:-10, 10:-10]
    crest = np.abs(xx - 2 * yy + 30)[10:-10, 10:-10] < 0.5
    assert slanted[crest] == pytest.approx(np.pi - np.arctan(4), abs=0.03)
    diagonal = np.exp(-((xx - yy - 3) ** 2) / 2 / 8)
    kept = edges_nms(diagonal)[6:-6, 6:-6] > 0
    rows, cols = np.nonzero(kept)
    assert (np.bincount(rows) == 1).all() and (cols - rows == 3).all()
    border = edges_nms(np.ones((20, 30), np.float32))  # a plateau survives (m = 1.01); the border ramps
    assert border[10, :6].tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])


def test_nms_agrees_with_the_c_port_of_edges_nms_mex():
    nms_lib = pytest.importorskip("pyEdgeEval._lib", reason="pyEdgeEval (pip install pyedgeeval, needs opencv) "
                                  "is the independent C port of edgesNmsMex; not installed here")
    for seed in range(3):
        _, pred = scene(seed, 60, 80)
        edges = pred.astype(np.float32) / np.float32(255)
        angle = edge_orientation(edges)
        ours = edges_nms(edges, angle)
        theirs = nms_lib.nms(edges.astype(np.float64), angle.astype(np.float64), r=1, s=5, m=1.01)
        assert np.mean((ours > 0) != (theirs > 0)) < 0.005  # float32 here, double there: ties only
        both = (ours > 0) & (theirs > 0)
        assert np.abs(ours[both] - theirs[both]).max() < 1e-6


# ----------------------------------------------------------------------------- matching


def test_a_boundary_shifted_within_the_radius_matches_and_beyond_it_does_not():
    gt = np.zeros((30, 40), bool)
    gt[5:25, 10] = True
    for shift, expected in ((0, 20), (5, 20), (6, 0)):  # radius 0.1 x diagonal 50 = 5 pixels, inclusive
        pred = np.zeros((30, 40), np.uint8)
        pred[5:25, 10 + shift] = 255
        counts = edge_counts(pred, gt, "mtinet", max_dist=0.1, thresholds=(0.5,))
        assert counts.tolist() == [[expected, 20, expected, 20]]
    a, b = np.zeros((30, 40), bool), np.zeros((30, 40), bool)
    a[10, 10], b[13, 14] = True, True  # (3, 4) apart: exactly 5
    assert match_count(a, b, 5.0) == 1 and match_count(a, b, 4.99) == 0


def test_each_pixel_matches_at_most_once():
    gt = np.zeros((20, 20), bool)
    gt[10, 10] = True
    pred = np.zeros((20, 20), np.uint8)
    pred[10, 9], pred[10, 12] = 200, 200  # two predictions near one boundary pixel
    counts = edge_counts(pred, gt, "mtinet", max_dist=0.2, thresholds=(0.5,))
    assert counts.tolist() == [[1, 1, 1, 2]]
    precision, recall, f = precision_recall(counts)
    assert (precision[0], recall[0], f[0]) == pytest.approx((0.5, 1.0, 2 / 3))


def test_the_matching_is_maximum_like_a_brute_force_assignment():
    rng = np.random.default_rng(7)
    for _ in range(40):
        h, w = rng.integers(4, 14, 2)
        gt, pred = rng.random((h, w)) < rng.uniform(0.05, 0.5), rng.random((h, w)) < rng.uniform(0.05, 0.5)
        radius = rng.uniform(0.5, 3.0)
        g, p = np.argwhere(gt), np.argwhere(pred)
        close = np.hypot(*(g[:, None, :] - p[None, :, :]).transpose(2, 0, 1)) <= radius
        rows, cols = linear_sum_assignment(-close.astype(float)) if close.size else ([], [])
        assert match_count(gt, pred, radius) == int(close[rows, cols].sum())


def test_the_counts_at_every_threshold_equal_a_fresh_thinning_and_matching():
    """edge_counts shares work between thresholds (nested maps, one pair search, each matching
    grown from the previous one): every threshold must still score as if alone."""
    for seed in (5, 6):
        labels, pred = scene(seed, 60, 80)
        gt = thin_binary(seg2bmap(labels))
        edges = edges_nms(pred.astype(np.float32) / np.float32(255))
        radius = 0.02 * np.hypot(60, 80)
        counts = edge_counts(pred, gt, "seism", max_dist=0.02)
        for t, (cnt_r, sum_r, cnt_p, sum_p) in zip(HED_THRESHOLDS, counts):
            binary = thin_binary(edges >= t)
            assert (cnt_r, sum_r, cnt_p, sum_p) == (match_count(gt, binary, radius), gt.sum(), cnt_r, binary.sum())


# ----------------------------------------------------------------------------- thresholds, masks


def test_eight_bit_values_are_read_as_k_over_255_and_kept_at_or_above_the_threshold():
    pred = np.zeros((20, 20), np.uint8)
    pred[3, 3], pred[10, 10], pred[16, 16] = 51, 50, 1  # 51/255 is 0.2 exactly
    gt = np.zeros((20, 20), bool)
    sizes = edge_counts(pred, gt, "mtinet", thresholds=(0.0, 0.001, 0.196, 0.2, 0.2000001))[:, 3]
    assert sizes.tolist() == [3, 3, 2, 1, 0]  # 0 is never an edge (SEISM: E >= max(eps, t))
    exact = np.zeros((20, 20), np.float32)
    exact[5, 5], exact[12, 12] = 0.5, 0.25  # floats equal to a threshold are kept: >=, not >
    assert edge_counts(exact, gt, "mtinet", thresholds=(0.25, 0.5))[:, 3].tolist() == [2, 1]
    assert len(HED_THRESHOLDS) == 101 and HED_THRESHOLDS[:3] == (0.001, 0.01, 0.02) and HED_THRESHOLDS[-1] == 0.999
    assert len(MTINET_THRESHOLDS) == 99 and MTINET_THRESHOLDS[0] == 0.01 and MTINET_THRESHOLDS[-1] == 0.99
    assert set(PROTOCOLS["seism-quick"].thresholds) < set(HED_THRESHOLDS)


def test_pixels_outside_the_valid_mask_count_neither_as_prediction_nor_as_ground_truth():
    labels, pred = scene(1)
    gt = seg2bmap(labels)
    padded_pred = np.pad(pred, ((3, 9), (0, 7)), constant_values=255)  # padding full of "edges"
    padded_gt = np.pad(gt, ((3, 9), (0, 7)), constant_values=True)
    valid = np.pad(np.ones(gt.shape, bool), ((3, 9), (0, 7)))
    plain = edge_counts(pred, gt, "seism")
    assert np.array_equal(edge_counts(padded_pred, padded_gt, "seism", valid=valid), plain)
    hole = np.ones(gt.shape, bool)
    hole[10:30, 20:40] = False
    masked = edge_counts(pred, gt, "mtinet", valid=hole, thresholds=(0.3,))
    assert masked[0, 1] == thin_binary(gt)[hole].sum()
    assert masked[0, 3] == thin_binary(pred >= 0.3 * 255)[hole].sum()
    assert edge_counts(pred, gt, valid=np.zeros(gt.shape, bool)).sum() == 0


def test_the_quick_protocol_scores_every_fifth_threshold_and_bounds_ods_from_below():
    labels, pred = scene(2)
    gt = seg2bmap(labels)
    full, quick = edge_counts(pred, gt, "seism"), edge_counts(pred, gt, "seism-quick")
    assert np.array_equal(quick, full[::5])
    full_summary = summarize(full, best_counts(full), HED_THRESHOLDS)
    quick_summary = summarize(quick, best_counts(quick), PROTOCOLS["seism-quick"].thresholds)
    assert quick_summary.ods_f <= full_summary.ods_f and quick_summary.ois_f <= full_summary.ois_f


# ----------------------------------------------------------------------------- summary


def test_ods_ois_and_ap_from_hand_computed_counts():
    thresholds = (0.2, 0.5, 0.8)
    first = np.array([[8, 10, 8, 16], [6, 10, 6, 8], [2, 10, 2, 2]])  # F 0.615, 0.667, 0.333
    second = np.array([[4, 5, 4, 4], [3, 5, 3, 3], [1, 5, 1, 1]])  # F 0.889, 0.75, 0.333
    assert best_counts(first).tolist() == [6, 10, 6, 8] and best_counts(second).tolist() == [4, 5, 4, 4]
    s = summarize(first + second, best_counts(first) + best_counts(second), thresholds)
    assert s.ods_f == pytest.approx(18 / 26) and s.ods_threshold == 0.5  # 24/35 at 0.2 is lower
    assert (s.ods_precision, s.ods_recall) == pytest.approx((9 / 11, 9 / 15))
    assert s.ois_f == pytest.approx(20 / 27) and s.ois_f >= s.ods_f


def test_ap_is_the_mean_interpolated_precision_of_the_pr_curve():
    # recall 1, 0.5, 0 with precision 0.5, 0.75, 1 (no prediction left: P = 1, R = 0), i.e. the
    # line P = 1 - R/2: sum over R = 0, 0.01, ..., 1 of (1 - R/2), / 100 = (101 - 25.25) / 100
    counts = np.array([[10, 10, 10, 20], [5, 10, 3, 4], [0, 10, 0, 0]])
    s = summarize(counts, counts[1], (0.1, 0.5, 0.9))
    assert s.ap == pytest.approx(0.7575)
    # a later threshold with a recall seen before is dropped (MATLAB's unique keeps the first)
    later = np.insert(counts, 1, [10, 10, 6, 10], axis=0)
    assert summarize(later, counts[1], (0.1, 0.3, 0.5, 0.9)).ap == pytest.approx(0.7575)
    earlier = np.insert(counts, 0, [10, 10, 6, 10], axis=0)
    assert summarize(earlier, counts[1], (0.05, 0.1, 0.5, 0.9)).ap > 0.7575


def test_seism_conventions_for_empty_ground_truth_or_prediction():
    precision, recall, f = precision_recall(np.array([[0, 0, 0, 5], [0, 7, 0, 0], [0, 0, 0, 0], [0, 7, 0, 5]]))
    assert precision.tolist() == [0, 1, 1, 0] and recall.tolist() == [1, 0, 0, 0] and not f.any()


def test_an_images_best_threshold_is_the_first_of_equal_f_at_six_decimals():
    counts = np.array([[1, 3, 1, 3], [333333337, 10**9, 333333337, 10**9]])  # F 0.333333333, 0.333333337
    assert best_counts(counts).tolist() == [1, 3, 1, 3]


def test_ois_is_at_least_ods_on_a_small_data_set():
    per_image = [edge_counts(pred, seg2bmap(labels)) for labels, pred in map(scene, range(4, 8))]
    s = summarize(sum(per_image), sum(best_counts(c) for c in per_image), HED_THRESHOLDS)
    assert 0 < s.ods_f <= s.ois_f < 1 and 0 < s.ap < 1


def test_agreement_with_pyedgeeval_on_random_and_structured_images():
    """pyEdgeEval reimplements BSDS's pipeline (bwmorph-style thinning, the CSA correspondPixels):
    the per-image best F of the same thresholded, thinned maps agree to 0.01."""
    evaluate = pytest.importorskip("pyEdgeEval.common.binary_label.evaluate_boundaries",
                                   reason="pyEdgeEval (pip install pyedgeeval, needs opencv) not installed here")
    thresholds = np.array(MTINET_THRESHOLDS[::4])
    rng = np.random.default_rng(11)
    cases = [(seg2bmap(labels), pred) for labels, pred in (scene(s, 60, 80) for s in range(4))]
    cases += [(rng.random((50, 70)) < 0.05, (rng.random((50, 70)) * 255).astype(np.uint8)) for _ in range(2)]
    for gt, pred in cases:
        ours = edge_counts(pred, gt, "mtinet", thresholds=tuple(thresholds))
        cnt_r, sum_r, cnt_p, sum_p = evaluate.evaluate_boundaries_threshold(
            thresholds, pred / 255.0, thin_binary(gt), max_dist=0.0075, apply_thinning=True, apply_nms=False)
        theirs = np.stack([cnt_r, sum_r, cnt_p, sum_p], axis=1)
        assert abs(precision_recall(ours)[2].max() - precision_recall(theirs)[2].max()) < 0.01


# ----------------------------------------------------------------------------- the command


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def folders(tmp_path):
    """Predictions a, b, c; label maps as PASCAL-Context .mat (a, c) and a PNG of ids (b); the same
    ground truth as NYUD-style boundary maps (PNG for a and b, .npy for c)."""
    expected = []
    for i, stem in enumerate("abc"):
        labels, pred = scene(20 + i, 30, 40)
        write_png(tmp_path / "pred" / f"{stem}.png", pred)
        if stem == "b":
            write_png(tmp_path / "labels" / "b.png", labels.astype(np.uint8))
        else:
            (tmp_path / "labels").mkdir(exist_ok=True)
            savemat(tmp_path / "labels" / f"{stem}.mat", {"LabelMap": labels.astype(np.uint16)})
        if stem == "c":  # ATRC ships NYUD-v2's boundaries as .npy, MTI-Net as PNG
            np.save(tmp_path / "edges" / "c.npy", seg2bmap(labels).astype(np.float32))
        else:
            write_png(tmp_path / "edges" / f"{stem}.png", seg2bmap(labels).astype(np.uint8) * 255)
        expected.append(edge_counts(pred, seg2bmap(labels)))
    return tmp_path, expected


def run(*argv):
    return main(["edges", *map(str, argv)])


def test_the_command_scores_label_maps_and_boundary_maps_alike(folders, capsys):
    tmp, per_image = folders
    want = summarize(sum(per_image), sum(best_counts(c) for c in per_image), HED_THRESHOLDS)
    assert run(tmp / "pred", "--labels", tmp / "labels", "--out", tmp / "labels.json") == 0
    printed = capsys.readouterr().out
    assert "3 images, protocol seism (101 thresholds)" in printed and f"ODS F {want.ods_f:.4f}" in printed
    assert run(tmp / "pred", "--boundaries", tmp / "edges", "--out", tmp / "edges.json", "--workers", 2) == 0
    from_labels, from_edges = (json.loads((tmp / f"{n}.json").read_text()) for n in ("labels", "edges"))
    for key, value in want.as_dict().items():
        assert from_labels[key] == pytest.approx(value) and from_edges[key] == pytest.approx(value)
    assert from_labels["counts"]["per_threshold"] == sum(per_image).tolist() and len(from_labels["f"]) == 101
    unthinned = [edge_counts(p, seg2bmap(lab), thin_gt=False) for lab, p in (scene(20 + i, 30, 40) for i in range(3))]
    assert run(tmp / "pred", "--labels", tmp / "labels", "--no-gt-thinning", "--out", tmp / "plain.json") == 0
    plain = json.loads((tmp / "plain.json").read_text())
    assert plain["thin_gt"] is False and plain["counts"]["per_threshold"] == sum(unthinned).tolist()
    assert "ground truth not thinned" in capsys.readouterr().out
    (tmp / "ids.txt").write_text("b\n\nc\n")
    assert run(tmp / "pred", "--labels", tmp / "labels", "--ids", tmp / "ids.txt", "--protocol", "mtinet",
               "--max-dist", 0.011) == 0
    assert "2 images, protocol mtinet (99 thresholds), maxDist 0.011" in capsys.readouterr().out


def damage_png(path):
    path.write_bytes(path.read_bytes()[:60])


def rgb(path):
    write_png(path, np.zeros((30, 40, 3), np.uint8))


def sixteen_bit(path):
    Image.fromarray(np.zeros((30, 40), np.uint16)).save(path)


def jpeg(path):
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(path, format="jpeg")


def wider(path):
    write_png(path, np.zeros((30, 41), np.uint8))


def folder(path):
    path.unlink()
    path.mkdir()


def empty(path):
    path.write_bytes(b"")


def no_label_map(path):
    savemat(path, {"Other": np.zeros((30, 40))})


def noise(path):
    path.write_bytes(np.random.default_rng(0).bytes(500))


@pytest.mark.parametrize(("file", "damage", "argument", "message"), [
    ("pred/a.png", damage_png, "PRED", r"pred/a\.png: not a readable image"),
    ("pred/a.png", rgb, "PRED", r"pred/a\.png: PNG of mode RGB, expected 8-bit grey"),
    ("pred/a.png", sixteen_bit, "PRED", r"pred/a\.png: PNG of mode I;16, expected 8-bit grey"),
    ("pred/a.png", jpeg, "PRED", r"pred/a\.png: is a JPEG image, expected a PNG"),
    ("pred/a.png", wider, "PRED", r"pred/a\.png: 30x41 \(HxW\), but its ground truth \S+/labels/a\.mat is 30x40"),
    ("pred/b.png", folder, "PRED", r"pred/b\.png: is a folder, expected a file"),
    ("pred/b.png", empty, "PRED", r"pred/b\.png: empty file"),
    ("labels/a.mat", no_label_map, "--labels", r"labels/a\.mat: no variable LabelMap \(holds: Other\)"),
    ("labels/a.mat", noise, "--labels", r"labels/a\.mat: not a readable MATLAB file"),
    ("labels/b.png", rgb, "--labels", r"labels/b\.png: PNG of mode RGB, expected one channel of label ids"),
    ("labels/c.mat", lambda p: p.unlink(), "--labels", r"labels: no c\.mat or c\.png, the ground truth of \S+/c\.png"),
])
def test_every_bad_input_is_one_line_naming_the_file(folders, capsys, file, damage, argument, message):
    tmp, _ = folders
    damage(tmp / file)
    assert run(tmp / "pred", "--labels", tmp / "labels") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"crossvit-mtl edges: error: {argument} "), err
    assert re.search(message, err), err


def test_ids_outputs_and_folders_are_checked_before_any_work(folders, capsys):
    tmp, _ = folders
    cases = [
        (("--ids", tmp / "ids.txt"), "c\nd\n", r"--ids \S+ids\.txt: id 'd' has no prediction \(\S+/pred/d\.png: no such file\)"),
        (("--ids", tmp / "ids.txt"), "a\nb\na\n", r"--ids \S+ids\.txt: line 3 repeats id 'a' of line 1"),
        (("--ids", tmp / "ids.txt"), "\n\n", r"--ids \S+ids\.txt: no ids"),
        (("--out", tmp / "kept.json"), None, r"--out \S+kept\.json: exists; pass --overwrite to replace it"),
    ]
    (tmp / "kept.json").write_text("keep me")
    for extra, ids, message in cases:
        if ids is not None:
            (tmp / "ids.txt").write_text(ids)
        assert run(tmp / "pred", "--labels", tmp / "labels", *extra) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and re.search(message, err), err
    assert (tmp / "kept.json").read_text() == "keep me"
    (tmp / "nothing").mkdir()
    assert run(tmp / "nothing", "--labels", tmp / "labels") == 2
    assert re.search(r"error: PRED \S+/nothing: no PNG images found$", capsys.readouterr().err.strip())
    assert run(tmp / "pred", "--boundaries", tmp / "missing") == 2
    assert re.search(r"error: --boundaries \S+/missing: no such folder$", capsys.readouterr().err.strip())


def test_a_boundary_map_that_is_not_two_dimensional_is_named(folders, capsys):
    tmp, _ = folders
    np.save(tmp / "edges" / "c.npy", np.zeros((30, 40, 3), np.float32))
    assert run(tmp / "pred", "--boundaries", tmp / "edges") == 2
    err = capsys.readouterr().err.strip()
    assert re.search(r"^crossvit-mtl edges: error: --boundaries \S+/edges/c\.npy: holds float32 of shape "
                     r"\(30, 40, 3\), expected a 2-D boundary map$", err), err
