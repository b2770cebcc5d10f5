"""Delta-m on a hand-computed case with mixed metric directions."""
import pytest

from crossvit_mtl.tasks import delta_m

BASELINES = {"segmentation": {"miou": 0.40, "pixel_acc": 0.80, "thesis_iou": 0.6667},
             "depth": {"abs_err": 0.10, "rel_err": 0.25, "rmse": 1.0}}
RESULTS = {"segmentation": {"miou": 0.50, "pixel_acc": 0.80, "thesis_iou": 0.6667},
           "depth": {"abs_err": 0.09, "rel_err": 0.30, "rmse": 1.0},
           "normal": {"mean": 20.0}}  # no baseline -> not counted


def test_delta_m_hand_case():
    # miou +25 (higher better), pixel_acc 0, abs_err +10 (lower better), rel_err -20  -> 15 / 4
    assert delta_m(RESULTS, BASELINES) == pytest.approx(15 / 4)
    # every scalar metric: also thesis_iou 0 and rmse 0 -> 15 / 6
    assert delta_m(RESULTS, BASELINES, metrics="all") == pytest.approx(15 / 6)
    assert delta_m(RESULTS, BASELINES, metrics={"segmentation": "miou", "depth": ["abs_err", "rel_err"]}) \
        == pytest.approx((25 + 10 - 20) / 3)


def test_delta_m_errors():
    with pytest.raises(ValueError, match="baseline is 0"):
        delta_m(RESULTS, {"depth": {"abs_err": 0.0}})
    with pytest.raises(ValueError, match="no direction"):
        delta_m(RESULTS, BASELINES, metrics={"depth": ["iou_per_class"]})
    with pytest.raises(KeyError, match="missing from baselines"):
        delta_m(RESULTS, BASELINES, metrics={"normal": ["mean"]})
    with pytest.raises(ValueError, match="no .* pair"):
        delta_m({"normal": {"mean": 20.0}}, BASELINES)
    with pytest.raises(ValueError, match="non-finite"):
        delta_m({"depth": {"abs_err": float("nan")}}, BASELINES)
