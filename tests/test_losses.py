"""Losses on hand-computed cases, ignore / invalid handling, float32 under autocast."""
import math

import pytest
import torch
import torch.nn.functional as F

from crossvit_mtl.data.common import IGNORE_INDEX
from crossvit_mtl.tasks import get_task
from crossvit_mtl.tasks.depth import MaskedL1Loss, MaskedLogL1Loss, ScaleInvariantLogLoss
from crossvit_mtl.tasks.normal import CosineNormalLoss, L1NormalLoss
from crossvit_mtl.tasks.segmentation import CEDiceLoss, CrossEntropyLoss, DiceLoss


def probs_to_logits(p0):
    """2-class logits whose softmax gives class-0 probabilities p0: logits = log p."""
    p0 = torch.tensor(p0, dtype=torch.float32)
    return torch.stack([p0.log(), (1 - p0).log()]).unsqueeze(0)  # (1, 2, H, W)


# 2x2 image; the bottom-right pixel is ignored.
DICE_LOGITS = probs_to_logits([[0.5, 0.75], [0.25, 0.8]])
DICE_TARGET = torch.tensor([[[0, 0], [1, IGNORE_INDEX]]])


@pytest.mark.parametrize("smooth, expected", [
    # valid pixels: p0 = .5, .75, .25 ; y0 = 1, 1, 0 ; p1 = .5, .25, .75 ; y1 = 0, 0, 1
    # class 0: 2*inter = 2*(.5+.75) = 2.5, sum p + sum y = 1.5 + 2 = 3.5
    # class 1: 2*inter = 2*.75 = 1.5,      sum p + sum y = 1.5 + 1 = 2.5
    (1.0, 1 - ((2.5 + 1) / (3.5 + 1) + (1.5 + 1) / (2.5 + 1)) / 2),  # 1 - (7/9 + 5/7)/2 = 16/63
    (0.0, 1 - (2.5 / 3.5 + 1.5 / 2.5) / 2),                          # 1 - (5/7 + 3/5)/2 = 12/35
])
def test_dice_hand_case(smooth, expected):
    loss = DiceLoss(smooth=smooth)(DICE_LOGITS, DICE_TARGET)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(16 / 63 if smooth else 12 / 35)


def test_dice_ignores_the_ignored_pixel_and_survives_empty():
    changed = DICE_LOGITS.clone()
    changed[0, :, 1, 1] = torch.tensor([-5.0, 7.0])
    assert DiceLoss()(changed, DICE_TARGET).item() == pytest.approx(16 / 63, rel=1e-6)
    logits = DICE_LOGITS.clone().requires_grad_()
    loss = DiceLoss()(logits, torch.full_like(DICE_TARGET, IGNORE_INDEX))
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(logits.grad).all()


def one_hot_dice(logits, target, smooth=1.0):
    """The per-pixel formula in float64: one-hot targets, masked probabilities."""
    valid = target != IGNORE_INDEX
    probs = logits.double().softmax(1) * valid.unsqueeze(1)
    onehot = F.one_hot(torch.where(valid, target, 0), logits.shape[1]).movedim(-1, 1) * valid.unsqueeze(1)
    dims = [0, *range(2, logits.dim())]
    inter, card = (probs * onehot).sum(dims), probs.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * inter + smooth) / (card + smooth)).mean()


@pytest.mark.parametrize("shape", [(3, 5, 7, 9), (2, 4, 11)])
def test_dice_equals_the_one_hot_formula_value_and_gradient(shape):
    g = torch.Generator().manual_seed(3)
    logits = (3 * torch.randn(*shape, generator=g)).requires_grad_()
    target = torch.randint(0, shape[1] - 1, (shape[0], *shape[2:]), generator=g)  # one class absent
    target[0, :2] = IGNORE_INDEX
    loss = DiceLoss(smooth=0.5)(logits, target)
    (grad,) = torch.autograd.grad(loss, logits)
    reference = logits.detach().double().requires_grad_()
    expected = one_hot_dice(reference, target, smooth=0.5)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(grad.double(), reference.grad, rtol=1e-5, atol=1e-9)
    assert grad[0, :, :2].abs().max() == 0  # ignored pixels get no gradient


def test_cross_entropy_matches_torch_and_handles_all_ignored():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, generator=g)
    target = torch.randint(0, 4, (2, 5, 6), generator=g)
    target[0, :2] = IGNORE_INDEX
    weights = torch.tensor([0.2, 1.0, 3.0, 0.5])
    assert CrossEntropyLoss()(logits, target).item() == pytest.approx(
        F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX).item(), rel=1e-6)
    assert CrossEntropyLoss(class_weights=weights)(logits, target).item() == pytest.approx(
        F.cross_entropy(logits, target, weight=weights, ignore_index=IGNORE_INDEX).item(), rel=1e-6)
    leaf = logits.clone().requires_grad_()
    loss = CrossEntropyLoss(class_weights=weights)(leaf, torch.full_like(target, IGNORE_INDEX))
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(leaf.grad).all()


def test_ce_dice_is_the_weighted_sum():
    loss = CEDiceLoss(ce_weight=0.5, dice_weight=2.0)(DICE_LOGITS, DICE_TARGET)
    expected = 0.5 * CrossEntropyLoss()(DICE_LOGITS, DICE_TARGET) + 2.0 * 16 / 63
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_masked_l1_ignores_invalid_pixels():
    pred = torch.tensor([[[[1.0, 5.0], [100.0, -3.0]]]], requires_grad=True)
    target = torch.tensor([[[[2.0, 3.0], [0.0, 0.0]]]])  # the large errors sit on invalid pixels
    loss = MaskedL1Loss()(pred, target)
    assert loss.item() == pytest.approx((1 + 2) / 2)
    loss.backward()
    assert pred.grad[0, 0, 1].abs().sum() == 0
    empty = MaskedL1Loss()(pred, torch.zeros_like(target))
    assert empty.item() == 0 and empty.requires_grad


def test_log_l1_scores_each_pixel_relative_to_its_depth():
    # 10 % too far at 3 m and 10 % too near at 150 m cost the same; the invalid pixel nothing
    pred = torch.tensor([[[[3.3, 135.0, 1e3]]]], requires_grad=True)
    target = torch.tensor([[[[3.0, 150.0, 0.0]]]])
    loss = MaskedLogL1Loss()(pred, target)
    assert loss.item() == pytest.approx((math.log(1.1) + math.log(150 / 135)) / 2, rel=1e-5)
    loss.backward()
    assert pred.grad[0, 0, 0, 2] == 0
    # a non-positive prediction is clamped, not a NaN; a batch without valid pixels gives 0
    assert torch.isfinite(MaskedLogL1Loss()(torch.zeros(1, 1, 1, 2), torch.ones(1, 1, 1, 2)))
    empty = get_task("depth").build_loss("log_l1")(pred, torch.zeros_like(target))
    assert empty.item() == 0 and empty.requires_grad


def test_silog_hand_case():
    # Image 0: pred / target on its valid pixels is e and 1, so d = (1, 0); image 1 has no valid pixel.
    e = math.e
    pred = torch.tensor([[[[e * 2.0, 3.0, 7.0]]], [[[1.0, 1.0, 1.0]]]])
    target = torch.tensor([[[[2.0, 3.0, 0.0]]], [[[0.0, 0.0, 0.0]]]])
    # mean(d^2) - lambda * mean(d)^2 = 1/2 - 0.85 * 1/4
    assert ScaleInvariantLogLoss()(pred, target).item() == pytest.approx(0.5 - 0.85 * 0.25, rel=1e-5)
    # Scale invariance at lambda = 1: multiplying the prediction changes nothing.
    silog1 = ScaleInvariantLogLoss(lambda_=1.0)
    assert silog1(pred * 3, target).item() == pytest.approx(silog1(pred, target).item(), abs=1e-6)


def test_cosine_loss_identical_and_opposite():
    target = F.normalize(torch.randn(2, 3, 4, 4), dim=1)
    target[:, :, 0] = 0  # invalid row: any prediction there must not count
    pred = 2.5 * target.clone()
    pred[:, :, 0] = torch.tensor([1.0, 0.0, 0.0])[:, None]
    loss = CosineNormalLoss()
    assert loss(pred, target).item() == pytest.approx(0, abs=1e-6)
    assert loss(-pred, target).item() == pytest.approx(2, abs=1e-6)


def test_l1_normal_loss_hand_case_sums_channels_and_averages_valid_pixels():
    """ATRC's / InvPT's L1Loss(normalize=True): the prediction made unit length, |difference| summed
    over x, y, z, divided by the number of valid pixels (a target of zeros is not valid)."""
    target = torch.zeros(1, 3, 1, 3)
    target[0, :, 0, 0] = torch.tensor([1.0, 0.0, 0.0])
    target[0, :, 0, 1] = torch.tensor([0.0, 0.0, 1.0])
    pred = torch.zeros(1, 3, 1, 3)
    pred[0, :, 0, 0] = torch.tensor([2.0, 0.0, 0.0])   # unit: (1, 0, 0), error 0
    pred[0, :, 0, 1] = torch.tensor([0.0, 3.0, 4.0])   # unit: (0, 0.6, 0.8): |0| + |0.6| + |-0.2| = 0.8
    pred[0, :, 0, 2] = torch.tensor([5.0, 5.0, 5.0])   # invalid target: not counted
    loss = L1NormalLoss()(pred.requires_grad_(), target)
    assert float(loss) == pytest.approx(0.8 / 2)
    loss.backward()
    assert pred.grad[0, :, 0, 2].abs().sum() == 0
    assert float(L1NormalLoss()(pred, torch.zeros_like(target))) == 0.0
    assert isinstance(get_task("normal").build_loss("l1"), L1NormalLoss)


def test_losses_are_float32_under_autocast():
    logits = torch.randn(1, 3, 4, 4).bfloat16()
    target = torch.randint(0, 3, (1, 4, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for loss in (get_task("segmentation").build_loss("ce_dice")(logits, target),
                     get_task("depth").build_loss("silog")(logits[:, :1].abs(), logits[:, 1:2].float().abs()),
                     CosineNormalLoss()(logits, logits.float())):
            assert loss.dtype == torch.float32


def test_build_loss_dispatch_and_errors():
    assert isinstance(get_task("segmentation").build_loss(), CrossEntropyLoss)
    assert isinstance(get_task("segmentation").build_loss("dice", smooth=0.5), DiceLoss)
    assert isinstance(get_task("depth").build_loss(), MaskedL1Loss)
    assert isinstance(get_task("depth").build_loss("silog", lambda_=0.5), ScaleInvariantLogLoss)
    assert isinstance(get_task("normal").build_loss(), CosineNormalLoss)
    assert isinstance(get_task("classification").build_loss(), CrossEntropyLoss)
    with pytest.raises(ValueError, match="unknown task 'edges'; known tasks: segmentation, "):
        get_task("edges")
    with pytest.raises(ValueError, match="unknown depth loss 'l2'"):
        get_task("depth").build_loss("l2")


@pytest.mark.parametrize("name", ["ce", "dice", "ce_dice"])
def test_a_loss_never_sees_a_target_outside_the_classes(name):
    from crossvit_mtl.tasks import TargetError

    loss = get_task("segmentation").build_loss(name)
    logits = torch.randn(2, 8, 4, 4, requires_grad=True)
    target = torch.randint(0, 8, (2, 4, 4))
    target[0, 0, 0] = 255  # not annotated: fine
    assert torch.isfinite(loss(logits, target))
    target[1, 2, 3] = 77
    with pytest.raises(TargetError, match=r"targets hold class 77, outside 0\.\.7 and the ignore index 255"):
        loss(logits, target)


def test_unit_vectors_equal_torch_normalize_in_value_and_gradient():
    from crossvit_mtl.functional import unit_vectors

    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    x[0, :, 0, 0] = 0.0  # an all-zero vector stays zero, as F.normalize leaves it
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, ref = unit_vectors(a, eps=1e-6), torch.nn.functional.normalize(b, dim=1, eps=1e-6)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    assert not ours[0, :, 0, 0].any()
    weights = torch.randn_like(x)
    (ours * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(unit_vectors(x.transpose(1, 3), dim=3), torch.nn.functional.normalize(
        x.transpose(1, 3), dim=3), rtol=1e-12, atol=1e-12)
