"""Task metrics against float64 numpy references, accumulation, simulated distributed merging,
and the official Cityscapes evaluation."""
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.classification import MulticlassAccuracy

from crossvit_mtl.data.common import IGNORE_INDEX
from crossvit_mtl.metrics import ClassificationMetric, DepthMetric, NormalMetric, SegmentationMetric
from crossvit_mtl.tasks import get_task


def merged(factory, update_args_a, update_args_b):
    """Two metric objects fed disjoint data, states then added: what a summed all-reduce does."""
    a, b = factory(), factory()
    a.update(*update_args_a)
    b.update(*update_args_b)
    for name, value in b.metric_state.items():
        setattr(a, name, getattr(a, name) + value)
    return a.compute()


def accumulated(factory, batches):
    m = factory()
    for batch in batches:
        m.update(*batch)
    return m.compute()


def single(factory, *args):
    m = factory()
    m.update(*args)
    return m.compute()


def assert_scalars_close(got, ref, keys, **tol):
    for key in keys:
        assert got[key] == pytest.approx(ref[key], nan_ok=True, **tol), key


# ---------------------------------------------------------------- segmentation

def seg_reference(pred, target, num_classes):
    pred, target = pred.numpy().ravel(), target.numpy().ravel()
    valid = target != IGNORE_INDEX
    pred, target = pred[valid], target[valid]
    iou, acc = np.full(num_classes, np.nan), np.full(num_classes, np.nan)
    for c in range(num_classes):
        tp = np.sum((pred == c) & (target == c), dtype=np.float64)
        fp = np.sum((pred == c) & (target != c), dtype=np.float64)
        fn = np.sum((pred != c) & (target == c), dtype=np.float64)
        if tp + fp + fn > 0:
            iou[c] = tp / (tp + fp + fn)
        if tp + fn > 0:
            acc[c] = tp / (tp + fn)
    pixel_acc = np.mean(pred == target) if target.size else np.nan
    return {"miou": np.nanmean(iou), "pixel_acc": pixel_acc, "iou_per_class": iou, "acc_per_class": acc}


@pytest.fixture
def seg_data():
    """6 classes: 0-3 in both, 4 in neither (NaN IoU), 5 predicted only (IoU 0); ~15% ignored."""
    g = torch.Generator().manual_seed(0)
    num_classes = 6
    logits = torch.randn(4, num_classes, 12, 20, generator=g)
    logits[:, 4] = -1e4
    target = torch.randint(0, 4, (4, 12, 20), generator=g)
    target[torch.rand(4, 12, 20, generator=g) < 0.15] = IGNORE_INDEX
    return num_classes, logits, target


def test_segmentation_matches_reference_accumulated_and_merged(seg_data):
    num_classes, logits, target = seg_data
    factory = lambda: SegmentationMetric(num_classes)
    ref = seg_reference(logits.argmax(1), target, num_classes)
    assert np.isnan(ref["iou_per_class"][4]) and ref["iou_per_class"][5] == 0

    results = [
        single(factory, logits, target),
        single(factory, logits.argmax(1), target),  # labels instead of logits
        accumulated(factory, [(logits[i:i + 1], target[i:i + 1]) for i in range(4)]),
        merged(factory, (logits[:1], target[:1]), (logits[1:], target[1:])),
    ]
    for got in results:
        assert_scalars_close(got, ref, ["miou", "pixel_acc"], rel=1e-12)
        np.testing.assert_allclose(got["iou_per_class"].numpy(), ref["iou_per_class"], rtol=1e-12)
        np.testing.assert_allclose(got["acc_per_class"].numpy(), ref["acc_per_class"], rtol=1e-12)
        assert got["confusion"].dtype == torch.int64
        assert got["confusion"].sum() == (target != IGNORE_INDEX).sum()
        assert isinstance(got["miou"], float)


def test_thesis_iou_is_pooled_one_hot_iou(seg_data):
    num_classes, logits, target = seg_data
    got = single(lambda: SegmentationMetric(num_classes), logits, target)
    acc = got["pixel_acc"]
    assert got["thesis_iou"] == pytest.approx(acc / (2 - acc), rel=1e-12)
    # The prototype's formula, literally: AND / OR of the one-hot maps over all classes at once.
    valid = target != IGNORE_INDEX
    p = torch.nn.functional.one_hot(logits.argmax(1)[valid], num_classes).bool()
    t = torch.nn.functional.one_hot(target[valid], num_classes).bool()
    assert got["thesis_iou"] == pytest.approx(((p & t).sum() / (p | t).sum()).item(), rel=1e-6)
    assert got["thesis_iou"] > got["miou"]


def test_segmentation_errors_and_empty():
    m = SegmentationMetric(3)
    with pytest.raises(ValueError, match="7"):
        m.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 7], [1, 255]]]))
    with pytest.raises(ValueError, match="prediction"):
        m.update(torch.full((1, 2, 2), 3), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="-1"):
        m.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), -1))
    empty = single(lambda: SegmentationMetric(3), torch.randn(1, 3, 2, 2), torch.full((1, 2, 2), IGNORE_INDEX))
    assert all(math.isnan(empty[k]) for k in ("miou", "pixel_acc", "thesis_iou"))
    assert torch.isnan(empty["iou_per_class"]).all()


def test_segmentation_agrees_with_cityscapesscripts(tmp_path, monkeypatch):
    """Same random trainId maps through the official evaluation (as labelId PNGs) and ours."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs
    from cityscapesscripts.helpers.labels import name2label, trainId2label

    for key, value in {"evalInstLevelScore": False, "evalPixelAccuracy": False, "JSONOutput": False,
                       "quiet": True}.items():
        monkeypatch.setattr(cs.args, key, value, raising=False)

    num_classes = 19
    lut = np.full(256, name2label["unlabeled"].id, dtype=np.uint8)  # trainId 255 -> an ignored labelId
    for train_id in range(num_classes):
        lut[train_id] = trainId2label[train_id].id

    rng = np.random.default_rng(1)
    # Class 3 never in the ground truth (predicted only), class 7 nowhere (NaN, left out of the mean).
    gt_classes = [c for c in range(num_classes) if c not in (3, 7)]
    pred_classes = [c for c in range(num_classes) if c != 7]
    gts, preds, gt_files, pred_files = [], [], [], []
    for i in range(3):
        gt = rng.choice(gt_classes, size=(24, 40)).astype(np.uint8)
        gt[rng.random(gt.shape) < 0.1] = IGNORE_INDEX
        pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.choice(pred_classes, size=gt.shape)).astype(np.uint8)
        pred[pred == IGNORE_INDEX] = 0
        gts.append(gt)
        preds.append(pred)
        gt_files.append(str(tmp_path / f"city_{i:06d}_000019_gtFine_labelIds.png"))
        pred_files.append(str(tmp_path / f"city_{i:06d}_000019_pred.png"))
        Image.fromarray(lut[gt]).save(gt_files[-1])
        Image.fromarray(lut[pred]).save(pred_files[-1])
    official = cs.evaluateImgLists(pred_files, gt_files, cs.args)

    metric = SegmentationMetric(num_classes)
    for gt, pred in zip(gts, preds):
        metric.update(torch.from_numpy(pred).long()[None], torch.from_numpy(gt).long()[None])
    ours = metric.compute()

    official_iou = np.array([official["classScores"][trainId2label[c].name] for c in range(num_classes)])
    assert np.isnan(official_iou[7]) and official_iou[3] == 0
    np.testing.assert_allclose(ours["iou_per_class"].numpy(), official_iou, rtol=1e-12)
    assert ours["miou"] == pytest.approx(official["averageScoreClasses"], rel=1e-12)


# ---------------------------------------------------------------- depth

def depth_reference(pred, target, eps=1e-6):
    p, t = pred.numpy().astype(np.float64).ravel(), target.numpy().astype(np.float64).ravel()
    valid = t > 0
    p, t = p[valid], t[valid]
    pc = np.maximum(p, eps)
    ratio = np.maximum(pc / t, t / pc)
    return {
        "abs_err": np.mean(np.abs(p - t)),
        "rel_err": np.mean(np.abs(p - t) / t),
        "rmse": np.sqrt(np.mean((p - t) ** 2)),
        "log_rmse": np.sqrt(np.mean((np.log(pc) - np.log(t)) ** 2)),
        **{f"delta{k}": np.mean(ratio < 1.25 ** k) for k in (1, 2, 3)},
    }


DEPTH_KEYS = ["abs_err", "rel_err", "rmse", "log_rmse", "delta1", "delta2", "delta3"]


def test_depth_matches_reference_accumulated_and_merged():
    g = torch.Generator().manual_seed(2)
    target = torch.rand(4, 1, 10, 14, generator=g) * 10
    target[torch.rand(target.shape, generator=g) < 0.3] = 0  # invalid
    pred = (target + torch.randn(target.shape, generator=g)).abs()
    pred[0, 0, 0, :3] = torch.tensor([0.0, -1.0, 1e-9])  # non-positive predictions hit the clamp
    target[0, 0, 0, :3] = 2.0
    ref = depth_reference(pred, target)
    factory = DepthMetric
    for got in (single(factory, pred, target),
                accumulated(factory, [(pred[:2], target[:2]), (pred[2:], target[2:])]),
                merged(factory, (pred[:3], target[:3]), (pred[3:], target[3:]))):
        assert_scalars_close(got, ref, DEPTH_KEYS, rel=1e-9)
        assert all(isinstance(got[k], float) for k in DEPTH_KEYS)


def test_depth_no_valid_pixel_gives_nan():
    got = single(DepthMetric, torch.rand(1, 1, 3, 3), torch.zeros(1, 1, 3, 3))
    assert set(got) == set(DEPTH_KEYS) and all(math.isnan(v) for v in got.values())


# ---------------------------------------------------------------- normals

def normal_reference(pred, target):
    p, t = pred.numpy().astype(np.float64), target.numpy().astype(np.float64)
    valid = np.abs(t).sum(1) > 0
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-300)
    err = np.degrees(np.arccos(np.clip((p * t).sum(1), -1, 1)))[valid]
    return {"mean": err.mean(), "median": np.median(err),
            **{f"within_{th:g}": np.mean(err < th) for th in (11.25, 22.5, 30.0)}}


NORMAL_KEYS = ["mean", "median", "within_11.25", "within_22.5", "within_30"]


@pytest.mark.parametrize("shape", [(3, 3, 9, 13), (2, 3, 8, 8)])  # odd and even valid counts
def test_normal_matches_reference_accumulated_and_merged(shape):
    g = torch.Generator().manual_seed(shape[0])
    target = torch.nn.functional.normalize(torch.randn(shape, generator=g), dim=1)
    target[:, :, :2] = 0  # invalid rows
    pred = 3 * target + 0.8 * torch.randn(shape, generator=g)  # un-normalised prediction
    ref = normal_reference(pred, target)
    factory = NormalMetric
    for got in (single(factory, pred, target),
                accumulated(factory, [(pred[i:i + 1], target[i:i + 1]) for i in range(shape[0])]),
                merged(factory, (pred[:1], target[:1]), (pred[1:], target[1:]))):
        assert_scalars_close(got, ref, ["mean", "within_11.25", "within_22.5", "within_30"], rel=1e-9)
        assert abs(got["median"] - ref["median"]) <= 0.01


def test_normal_no_valid_pixel_gives_nan():
    got = single(NormalMetric, torch.randn(1, 3, 2, 2), torch.zeros(1, 3, 2, 2))
    assert set(got) == set(NORMAL_KEYS) and all(math.isnan(v) for v in got.values())


# ---------------------------------------------------------------- classification

@pytest.mark.parametrize("num_classes", [4, 10])
def test_classification_matches_torchmetrics_and_numpy(num_classes):
    g = torch.Generator().manual_seed(num_classes)
    logits = torch.randn(40, num_classes, generator=g)
    target = torch.randint(0, num_classes, (40,), generator=g)
    target[:3] = IGNORE_INDEX
    factory = lambda: ClassificationMetric(num_classes)
    keep = target != IGNORE_INDEX
    ks = (1, 5) if num_classes > 5 else (1,)
    ref = {f"top{k}": np.mean([t in row for t, row in zip(target[keep].tolist(),
                                                           logits[keep].topk(k, 1).indices.tolist())]) for k in ks}
    for got in (single(factory, logits, target),
                accumulated(factory, [(logits[:17], target[:17]), (logits[17:], target[17:])]),
                merged(factory, (logits[:5], target[:5]), (logits[5:], target[5:]))):
        assert set(got) == set(ref)
        for k in ks:
            tm = MulticlassAccuracy(num_classes, top_k=k, average="micro", ignore_index=IGNORE_INDEX)
            assert got[f"top{k}"] == pytest.approx(ref[f"top{k}"], rel=1e-12)
            assert got[f"top{k}"] == pytest.approx(tm(logits, target).item(), rel=1e-6)
    empty = single(factory, logits[:3], target[:3])
    assert all(math.isnan(v) for v in empty.values())


# ---------------------------------------------------------------- tables

def test_direction_table_covers_every_scalar_metric():
    outputs = {
        "segmentation": single(lambda: SegmentationMetric(3), torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2).long()),
        "depth": single(DepthMetric, torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 2) + 0.1),
        "normal": single(NormalMetric, torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2)),
        "classification": single(lambda: ClassificationMetric(10), torch.randn(4, 10), torch.arange(4)),
    }
    for task, out in outputs.items():
        scalars = {k for k, v in out.items() if isinstance(v, float)}
        assert scalars == set(get_task(task).metrics), task
        assert get_task(task).primary_metric in scalars
        assert set(get_task(task).delta_metrics) <= scalars and get_task(task).single_delta_metric in scalars
