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
    # MTI-Net's set, one metric per task: segmentation mIoU +25, depth RMSE 0 -> 12.5
    assert delta_m(RESULTS, BASELINES, metrics="single") == pytest.approx(12.5)
    with pytest.raises(ValueError, match="metric set must be one of default, single, all, got 'best'"):
        delta_m(RESULTS, BASELINES, metrics="best")


def test_delta_m_single_set_on_the_benchmarks_tasks():
    """PASCAL-Context's five tasks as MTI-Net scores them: saliency by mIoU, edges by odsF."""
    base = {"segmentation": {"miou": 0.60}, "human_parts": {"miou": 0.50}, "saliency": {"maxf": 0.80, "miou": 0.60},
            "normal": {"mean": 15.0}, "edge": {"odsf": 0.70}}
    new = {"segmentation": {"miou": 0.66}, "human_parts": {"miou": 0.45}, "saliency": {"maxf": 0.60, "miou": 0.63},
           "normal": {"mean": 16.5}, "edge": {"odsf": 0.70}}
    # +10, -10, +5 (saliency by mIoU, not maxF), -10 (lower is better), 0
    assert delta_m(new, base, metrics="single") == pytest.approx(-5 / 5)


def test_delta_m_two_conventions_can_disagree_in_sign():
    """Per metric (Nash-MTL) vs per task first (LibMTL): a task with many metrics dominates the first."""
    base = {"segmentation": {"miou": 0.5}, "normal": {"mean": 20.0, "median": 10.0, "within_11.25": 0.5,
                                                      "within_22.5": 0.7, "within_30": 0.8}}
    new = {"segmentation": {"miou": 0.4}, "normal": {"mean": 19.0, "median": 9.5, "within_11.25": 0.51,
                                                     "within_22.5": 0.714, "within_30": 0.808}}
    per_metric = [-20.0, 5.0, 5.0, 2.0, 2.0, 1.0]  # seg -20; normals +5 +5 +2 +2 +1
    assert delta_m(new, base, average="metrics") == pytest.approx(sum(per_metric) / 6)  # -0.83
    assert delta_m(new, base, average="tasks") == pytest.approx((-20.0 + 15.0 / 5) / 2)  # -8.5
    # LibMTL's count_improvement on the same numbers, written out: mean within each task, then over tasks
    libmtl = sum(sum(v) / len(v) for v in ([-20.0], [5.0, 5.0, 2.0, 2.0, 1.0])) / 2
    assert delta_m(new, base, average="tasks") == pytest.approx(libmtl)
    # one metric per task: the conventions agree
    one = {"segmentation": {"miou": 0.55}, "depth": {"abs_err": 0.09}}
    ref = {"segmentation": {"miou": 0.5}, "depth": {"abs_err": 0.1}}
    assert delta_m(one, ref, average="tasks") == pytest.approx(delta_m(one, ref)) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="average must be one of metrics, tasks"):
        delta_m(one, ref, average="median")


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
