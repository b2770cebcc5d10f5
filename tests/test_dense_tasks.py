"""The tasks the field's benchmarks add (edges, saliency, human parts): losses against hand-computed
values, metrics against independent re-implementations of the reference evaluators' formulas,
summed states that split across processes exactly, data handling, and one-line errors."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossvit_mtl.tasks import IGNORE_INDEX, TargetError, edge_eval, get_task
from crossvit_mtl.tasks.edge import EdgeMetric, WeightedBCELoss, to_8bit
from crossvit_mtl.tasks.human_parts import PART_NAMES
from crossvit_mtl.tasks.saliency import MAXF_THRESHOLDS, MIOU_THRESHOLDS, BalancedCrossEntropyLoss, SaliencyMetric


def _split_equals_whole(make, preds, targets):
    """Two metrics fed halves, their states summed (what DDP's reduction does), give the whole's result."""
    whole, a, b = make(), make(), make()
    whole.update(preds, targets)
    half = len(preds) // 2
    a.update(preds[:half], targets[:half])
    b.update(preds[half:], targets[half:])
    for name in a._defaults:
        setattr(a, name, getattr(a, name) + getattr(b, name))
    return whole.compute(), a.compute()


# ------------------------------------------------------------------------------------- edges

def test_weighted_bce_weighs_boundaries_095_and_background_005_over_annotated_pixels():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, 3.0]]]])
    target = torch.tensor([[[1, 0], [IGNORE_INDEX, 0]]])
    sig = lambda x: 1 / (1 + math.exp(-x))
    by_hand = (-0.95 * math.log(sig(2.0)) - 0.05 * math.log(1 - sig(-1.0)) - 0.05 * math.log(1 - sig(3.0))) / 3
    assert WeightedBCELoss()(logits, target).item() == pytest.approx(by_hand, rel=1e-6)
    assert WeightedBCELoss()(logits, torch.full_like(target, IGNORE_INDEX)).item() == 0.0
    with pytest.raises(TargetError, match="edge targets hold 2; a edge map holds 0, 1 and 255"):
        WeightedBCELoss()(logits, torch.tensor([[[1, 2], [0, 0]]]))
    with pytest.raises(ValueError, match="positive_weight must be in \\(0, 1\\), got 1.5"):
        get_task("edge").build_loss(positive_weight=1.5)


def test_edge_metric_sums_what_the_evaluator_counts_per_image_and_splits_exactly():
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (4, 6, 10), generator=gen).repeat_interleave(4, 1).repeat_interleave(4, 2)
    target = torch.from_numpy(np.stack([edge_eval.seg2bmap(x.numpy()) for x in labels])).to(torch.int64)
    target[3, :, :8] = IGNORE_INDEX  # padding: neither prediction nor ground truth there
    logits = torch.randn(4, 1, 24, 40, generator=gen) + 3 * (target == 1).unsqueeze(1)
    metric = EdgeMetric("seism-quick", max_dist=0.02)
    metric.update(logits, target)
    got = metric.compute()
    stored = to_8bit(torch.sigmoid(logits[:, 0])).numpy()
    per_image = [edge_eval.edge_counts(p, t.numpy() == 1, "seism-quick", 0.02, valid=t.numpy() != IGNORE_INDEX)
                 for p, t in zip(stored, target)]
    summary = edge_eval.summarize(sum(per_image), sum(edge_eval.best_counts(c) for c in per_image),
                                  edge_eval.get_protocol("seism-quick").thresholds)
    assert got == pytest.approx({"odsf_quick": summary.ods_f, "oisf_quick": summary.ois_f, "ap_quick": summary.ap})
    assert 0.3 < got["odsf_quick"] <= got["oisf_quick"] <= 1
    whole, split = _split_equals_whole(lambda: EdgeMetric("seism-quick", max_dist=0.02), logits, target)
    assert whole == split
    empty = EdgeMetric()
    empty.update(torch.full((1, 1, 8, 8), -20.0), torch.zeros(1, 8, 8, dtype=torch.int64))
    assert all(math.isnan(v) for v in empty.compute().values())  # nothing to find, nothing found


def test_edge_metric_stage_protocols_and_the_data_sets_max_dist():
    task = get_task("edge")
    assert task.build_metric({}, "val").protocol.name == "seism-quick"
    test = task.build_metric({"task_options": {"edge": {"max_dist": 0.011}}}, "test")
    assert test.protocol.name == "seism" and test.max_dist == 0.011
    assert len(test.protocol.thresholds) == 101
    with pytest.raises(ValueError, match="max_dist is a fraction of the image diagonal in \\(0, 1\\), got 7"):
        task.build_metric({"task_options": {"edge": {"max_dist": 7}}})


@pytest.mark.parametrize("size", [(24, 40), (48, 80), (13, 21)])
def test_a_resized_boundary_stays_one_pixel_wide_and_connected(size):
    edge = torch.zeros(24, 40, dtype=torch.uint8)
    edge[:, 17] = 1  # a vertical boundary
    edge[9, :] = 1  # crossing a horizontal one
    edge[:2, :] = IGNORE_INDEX
    out = get_task("edge").resize(edge, size)
    assert out.shape == size and set(out.unique().tolist()) <= {0, 1, IGNORE_INDEX}
    rows = (out[2 * size[0] // 24 + 1:] == 1).sum(1)  # below the ignored band
    assert (rows[:-1] >= 1).all()  # the vertical line is unbroken (thinning may take the border's end pixel)
    lone_rows = rows[(rows > 0) & (torch.arange(len(rows)) + 2 * size[0] // 24 + 1 != round(9 * size[0] / 24))]
    assert (lone_rows <= 2).sum() >= len(lone_rows) - 2  # one pixel wide away from the crossing
    assert (out[:2 * size[0] // 24] == IGNORE_INDEX).all()
    assert torch.equal(get_task("edge").resize(edge, (24, 40)), edge)


def test_edge_maps_that_are_not_binary_are_named():
    bad, what = get_task("edge").bad_values(np.array([[[0, 1], [255, 0]], [[0, 3], [1, 1]]], np.uint8), {})
    assert bad.tolist() == [False, True] and what.startswith("values other than 0, 1 and 255")


# ------------------------------------------------------------------------------------- saliency

def test_balanced_ce_weighs_each_class_by_the_others_share():
    logits = torch.tensor([[[[1.0, -2.0, 0.5, 0.0]], [[0.0, 1.0, -0.5, 2.0]]]])  # (1, 2, 1, 4)
    target = torch.tensor([[[1, 0, 0, IGNORE_INDEX]]])
    logp = F.log_softmax(logits, 1)[0, :, 0]
    share = 1 / 3  # salient pixels among the three annotated ones
    by_hand = -((1 - share) * logp[1, 0] + share * logp[0, 1] + share * logp[0, 2]) / 3
    assert BalancedCrossEntropyLoss()(logits, target).item() == pytest.approx(by_hand.item(), rel=1e-6)
    with pytest.raises(TargetError, match="saliency targets hold 2"):
        BalancedCrossEntropyLoss()(logits, torch.tensor([[[1, 0, 2, 0]]]))


def _reference_saliency(prob, target):
    """The reference evaluators' formulas, image by image and threshold by threshold: ATRC/InvPT's
    maxF (counts over the data set, beta^2 = 0.3, >= t) and MTI-Net's mIoU (per-image IoU, > t)."""
    valid = target != IGNORE_INDEX
    fs = []
    for t in MAXF_THRESHOLDS:
        tp = sum(((p >= t) & (g == 1) & v).sum() for p, g, v in zip(prob, target, valid))
        pp = sum(((p >= t) & v).sum() for p, v in zip(prob, valid))
        ap = sum(((g == 1) & v).sum() for g, v in zip(target, valid))
        prec, rec = tp / pp if pp else float("nan"), tp / ap
        f = 1.3 * prec * rec / (0.3 * prec + rec) if pp and (0.3 * prec + rec) else 0.0
        fs.append(0.0 if f != f else f)
    ious = []
    for t in MIOU_THRESHOLDS:
        per = []
        for p, g, v in zip(prob, target, valid):
            pred, gt = (p > t) & v, (g == 1) & v
            union = (pred | gt).sum()
            per.append(1.0 if union == 0 else (pred & gt).sum() / union)
        ious.append(np.mean(per))
    return max(fs), max(ious)


def test_saliency_metric_matches_the_reference_formulas_and_splits_exactly():
    gen = torch.Generator().manual_seed(1)
    target = (torch.rand(6, 9, 11, generator=gen) < 0.3).long()
    target[0, :3] = IGNORE_INDEX
    target[5] = 0  # an image without salient pixels: IoU 1 where nothing is predicted
    logits = torch.randn(6, 2, 9, 11, generator=gen)
    logits[:, 1] += 2 * (target == 1)
    metric = SaliencyMetric()
    metric.update(logits, target)
    got = metric.compute()
    prob = logits.double().softmax(1)[:, 1].numpy()
    maxf, miou = _reference_saliency(prob, target.numpy())
    assert got["maxf"] == pytest.approx(maxf, abs=1e-12) and got["miou"] == pytest.approx(miou, abs=1e-12)
    whole, split = _split_equals_whole(SaliencyMetric, logits, target)
    assert whole == pytest.approx(split, abs=1e-12)


# ------------------------------------------------------------------------------------- human parts

def test_human_parts_miou_counts_like_mti_nets_evaluator_and_ignores_images_without_a_person():
    gen = torch.Generator().manual_seed(2)
    target = torch.randint(0, 7, (4, 8, 8), generator=gen)
    target[2] = IGNORE_INDEX  # no person in this image: not scored at all
    logits = torch.randn(4, 7, 8, 8, generator=gen) + 3 * F.one_hot(target.clamp(max=6), 7).permute(0, 3, 1, 2)
    task = get_task("human_parts")
    metric = task.build_metric({})
    metric.update(logits, target)
    got = metric.compute()
    pred, gt = logits.argmax(1).numpy(), target.numpy()
    valid = gt != IGNORE_INDEX
    jac = [((gt == k) & (pred == k) & valid).sum() / max(((gt == k) | (pred == k)).__and__(valid).sum(), 1e-8)
           for k in range(7)]  # MTI-Net's tp / (tp + fp + fn) over the data set
    assert got["miou"] == pytest.approx(float(np.mean(jac)))
    assert "thesis_iou" not in got and task.class_names({}) == PART_NAMES
    logits[2] = torch.randn(7, 8, 8)  # whatever is predicted on the person-less image changes nothing
    again = task.build_metric({})
    again.update(logits, target)
    assert again.compute()["miou"] == got["miou"]


def test_new_tasks_in_the_registry_know_their_channels_and_refuse_others():
    assert [get_task(t).channels({}) for t in ("edge", "saliency", "human_parts")] == [1, 2, 7]
    with pytest.raises(ValueError, match="task 'edge' has 1 output channel, got 2"):
        get_task("edge").check_channels(2)
    with pytest.raises(ValueError, match="task 'human_parts' needs at least 2 classes, got 1"):
        get_task("human_parts").check_channels(1)
    bad, what = get_task("human_parts").bad_values(np.array([[[0, 6]], [[7, 255]]], np.uint8), {})
    assert bad.tolist() == [False, True] and what == "label values outside 0..6 and 255"
