"""One checkpoint rule per fit (``checkpoint_selection``), the val figures of the checkpoint that is
tested, and each test sample's metric states for the comparisons' bootstrap."""
import json

import numpy as np
import pytest
import torch

import fixtures_run
from crossvit_mtl.cli import main
from crossvit_mtl.comparison import SAMPLES_FILE, bootstrap_counts, read_sample_states, replicate_results
from crossvit_mtl.engine.module import CHECKPOINT_SELECTIONS, monitor_key
from fixtures_run import TINY_TASKS, tiny_config

TASKS = TINY_TASKS


def write_config(path, **top):
    """The tiny run for three epochs of one step, validated and tested on all of its 6 scenes."""
    return fixtures_run.write_config(path, tiny_config(
        data={"options": {"length": 6, "height": 32, "width": 64}},
        trainer={"max_steps": None, "max_epochs": 3, "limit_train_batches": 1, "limit_val_batches": None,
                 "limit_test_batches": None}, **top))


def test_monitor_keys_of_the_rules():
    assert monitor_key(["segmentation", "depth"], "last") == (None, "max")
    assert monitor_key(["depth"], "val_loss") == ("val/loss", "min")
    assert monitor_key(["depth", "segmentation"], "val_metric") == ("val/segmentation/miou", "max")
    assert monitor_key(["depth"], "val_metric") == ("val/depth/abs_err", "min")
    with pytest.raises(ValueError, match="checkpoint_selection must be one of last, val_loss, val_metric, got 'best'"):
        monitor_key(["depth"], "best")
    # the command line's choices are these rules (tests/test_malformed_inputs.py feeds it bad values)
    assert list(CHECKPOINT_SELECTIONS) == ["last", "val_loss", "val_metric"]


def test_an_unknown_rule_fails_in_one_line(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", checkpoint_selection="best")
    assert main(["fit", "--config", config, "--run_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "checkpoint_selection" in err and "best" in err


@pytest.fixture(scope="module")
def last_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("last")
    config = write_config(root / "c.yaml", test_after_fit=True)
    assert main(["fit", "--config", config, "--run_dir", str(root / "run")]) == 0
    return root / "run"


def test_last_tests_the_weights_at_the_end_and_metrics_json_is_theirs(last_run):
    val = json.loads((last_run / "metrics.json").read_text())
    test = json.loads((last_run / "metrics_test.json").read_text())
    final = torch.load(last_run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    assert final == 3  # three epochs of one step
    for payload in (val, test):
        assert payload["checkpoint_selection"] == "last" and payload["checkpoint"] is None
        assert payload["global_step"] == final
    # best.ckpt under `last` is the latest checkpoint, the weights tested
    best = torch.load(last_run / "checkpoints" / "best.ckpt", weights_only=False)
    assert best["global_step"] == final


def test_each_test_sample_s_states_add_up_to_the_test_figures(last_run):
    """Summing the saved per-sample states recomputes every test metric exactly; a resample that
    counts sample 0 twice and drops sample 1 is the metric of that multiset."""
    samples = read_sample_states(last_run / SAMPLES_FILE)
    assert set(samples.states) == set(TASKS) and samples.count == 6
    assert set(samples.digests) == set(TASKS) and samples.digests["classification"].shape == (6,)
    assert samples.states["segmentation"]["confmat"].shape == (6, 8, 8)
    assert samples.states["normal"]["hist"].dtype == np.int32  # counts narrowed to int32
    test = json.loads((last_run / "metrics_test.json").read_text())["results"]
    whole = replicate_results(samples, np.ones((1, 6), dtype=np.int64))[0]
    for task in TASKS:
        for key, value in whole[task].items():
            if test[task].get(key) is not None:
                assert value == pytest.approx(test[task][key], rel=1e-9, abs=1e-12), (task, key)
    counts = np.array([[2, 0, 1, 1, 1, 1]])
    resampled = replicate_results(samples, counts)[0]
    confmat = (samples.states["segmentation"]["confmat"] * counts[0][:, None, None]).sum(0)
    assert resampled["segmentation"]["pixel_acc"] == pytest.approx(np.trace(confmat) / confmat.sum())
    correct = samples.states["classification"]["correct"][:, 0]
    assert resampled["classification"]["top1"] == pytest.approx((correct * counts[0]).sum() / 6)
    # resamples of 6 with replacement: each row sums to 6, fixed by the seed
    drawn = bootstrap_counts(6, 5)
    assert drawn.shape == (5, 6) and (drawn.sum(1) == 6).all() and np.array_equal(drawn, bootstrap_counts(6, 5))


@pytest.mark.heavy
def test_val_rules_validate_the_chosen_checkpoint_again(tmp_path, capfd):
    config = write_config(tmp_path / "c.yaml", test_after_fit=True, checkpoint_selection="val_loss")
    run = tmp_path / "run"
    assert main(["fit", "--config", config, "--run_dir", str(run)]) == 0
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=False)
    header, *rows = (run / "csv" / "fit" / "metrics.csv").read_text().splitlines()
    losses = {int(v["epoch"]): float(v["val/loss"]) for row in rows
              for v in [dict(zip(header.split(","), row.split(",")))] if v.get("val/loss")}
    # the epochs' validations only (validating the chosen checkpoint again adds nothing to the curves)
    assert len(losses) == 3 and best["epoch"] == min(losses, key=losses.get)  # the lowest val loss
    val = json.loads((run / "metrics.json").read_text())
    test = json.loads((run / "metrics_test.json").read_text())
    logged = [dict(zip(header.split(","), row.split(","))) for row in rows]
    at_best = next(v for v in logged if v.get("val/loss") and int(v["epoch"]) == best["epoch"])
    assert val["results"]["segmentation"]["miou"] == pytest.approx(float(at_best["val/segmentation/miou"]), rel=1e-6)
    for payload in (val, test):
        assert payload["checkpoint_selection"] == "val_loss"
        assert payload["checkpoint"].endswith("best.ckpt") and payload["global_step"] == best["global_step"]
    # testing on the split that picks checkpoints: the last weights, and why
    capfd.readouterr()
    assert main(["fit", "--config", config, "--run_dir", str(tmp_path / "same"), "--data.test_split", "val"]) == 0
    assert "data.test_split is 'val', the split that picks checkpoints; reporting the last weights" in capfd.readouterr().err
    same = json.loads((tmp_path / "same" / "metrics_test.json").read_text())
    assert same["checkpoint"] is None and same["global_step"] == 3
