import copy
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import yaml

from crossvit_mtl import create_model
from crossvit_mtl.cli import UserError, main
from crossvit_mtl.cli.demo import config_path
from crossvit_mtl.cli.sweep import plan
from fixtures_run import tiny_config


def write_run(folder, results, split="test"):
    folder.mkdir(parents=True)
    name = "metrics_test.json" if split == "test" else "metrics.json"
    (folder / name).write_text(json.dumps({"stage": split, "model": "crossvit_mtl_tiny", "results": results}))
    return str(folder)


@pytest.fixture
def runs(tmp_path):
    seg = write_run(tmp_path / "seg", {"segmentation": {
        "miou": 0.5, "pixel_acc": 0.8, "thesis_iou": 0.66, "iou_per_class": {"road": 0.9}}})
    depth = write_run(tmp_path / "depth", {"depth": {"abs_err": 0.2, "rel_err": 0.4, "rmse": 1.0}})
    mtl = write_run(tmp_path / "mtl", {"segmentation": {"miou": 0.55, "pixel_acc": 0.8, "thesis_iou": None},
                                       "depth": {"abs_err": 0.25, "rel_err": 0.3, "rmse": 0.5}})
    return seg, depth, mtl


def sections(out: str) -> dict[str, str]:
    """The report's parts by the line that introduces them."""
    parts = out.strip().split("\n\n")
    found = {}
    for i, part in enumerate(parts):
        if part.endswith(":") and i + 1 < len(parts):
            found[part] = parts[i + 1]
    found["note"] = next(p for p in parts if p.startswith("Δm over "))
    return found


def test_compare_prints_each_task_first_then_every_scalar_and_delta_m_both_ways(runs, tmp_path, capsys):
    seg, depth, mtl = runs
    out = tmp_path / "table.json"
    assert main(["compare", mtl, "--baselines", seg, depth, "--out", str(out), "--all-metrics"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("Each task against its single-task baseline")  # the per-task table first
    parts = sections(printed)
    per_task = parts["Each task against its single-task baseline (mean ± std over seeds):"].splitlines()
    table = parts["Metrics (mean ± std over seeds) and Δm against the single-task baselines:"].splitlines()
    assert parts["note"].startswith("Δm over each task's Delta-m metrics")
    # miou +10 %, pixel acc 0 %, abs err -25 %, rel err +25 % (lower is better): per metric +2.5 %;
    # per task: segmentation +5, depth 0 -> +2.5 too
    assert table[-1].startswith("| mtl | 1 |") and table[-1].endswith("| +2.50 | +2.50 |")
    assert "segmentation mIoU ↑" in table[0] and "depth RMSE ↓" in table[0]
    assert "Δm metrics (%) ↑" in table[0] and "Δm tasks (%) ↑" in table[0] and "dense" not in table[0]
    assert "iou_per_class" not in table[0] and len(table) == 2 + 3
    assert per_task[0] == "| run | seeds | Δ segmentation (%) ↑ | Δ depth (%) ↑ |"
    assert per_task[2:] == ["| mtl | 1 | +5.00 | +0.00 |"]  # runs only, not the baselines
    data = json.loads(out.read_text())
    assert data["split"] == "test" and data["groups"][-1]["delta_m"]["metrics"]["mean"] == pytest.approx(2.5)
    assert [g["baseline"] for g in data["groups"]] == [True, True, False]
    assert data["tests"] == 0  # one seed: nothing is tested
    md = tmp_path / "table.md"
    assert main(["compare", mtl, "--baselines", seg, depth, "--out", str(md)]) == 0
    assert "every metric" in md.read_text().lower()
    assert main(["compare", mtl, "--baselines", seg, depth, "--out", str(md)]) == 2  # no silent overwrite
    assert "table.md: exists; pass --overwrite" in capsys.readouterr().err


def test_compare_reads_the_test_split_by_default(tmp_path, capsys):
    seg = write_run(tmp_path / "seg", {"segmentation": {"miou": 0.5}}, split="val")
    assert main(["compare", seg, "--baselines", seg]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "metrics_test.json" in err and "crossvit-mtl test" in err
    assert main(["compare", seg, "--baselines", seg, "--split", "val"]) == 2  # same name twice
    assert "two runs are named 'seg'" in capsys.readouterr().err


def write_seeds(root, name, values, seeds=None):
    for seed, results in zip(seeds or range(len(values)), values):
        write_run(root / name / f"seed{seed}", results)
    return str(root / name)


def test_seed_folders_give_mean_std_paired_delta_m_and_corrected_marks(tmp_path, capsys):
    from crossvit_mtl.comparison import compare, to_json

    seg = write_seeds(tmp_path, "single_seg", [{"segmentation": {"miou": m}} for m in (0.50, 0.40, 0.60)])
    dep = write_seeds(tmp_path, "single_depth", [{"depth": {"abs_err": a}} for a in (1.0, 2.0, 1.0)])
    # ew: seg +10 %, +10 %, +10 % against the same seed's baseline; depth 0, 0, 0
    ew = write_seeds(tmp_path, "ew", [{"segmentation": {"miou": m}, "depth": {"abs_err": a}}
                                      for m, a in ((0.55, 1.0), (0.44, 2.0), (0.66, 1.0))])
    # other: seg +20, +20, +21 %; depth -10, -11, -10 % (lower is better: abs err up)
    other = write_seeds(tmp_path, "other", [{"segmentation": {"miou": m}, "depth": {"abs_err": a}}
                                            for m, a in ((0.60, 1.1), (0.48, 2.22), (0.726, 1.1))])
    comparison = compare([ew, other], [seg, dep])
    assert comparison.reference == "ew" and comparison.delta_keys == ["metrics", "tasks"]  # no image task
    ew_g, other_g = comparison.runs
    assert ew_g.delta["metrics"] == pytest.approx({"seed0": 5.0, "seed1": 5.0, "seed2": 5.0})
    assert other_g.delta["tasks"] == pytest.approx({"seed0": 5.0, "seed1": 4.5, "seed2": 5.5})
    # paired differences to ew: 0, -0.5, +0.5 -> mean 0, inside any interval
    points, reps = comparison.paired(other_g, "metrics")
    assert reps is None and points == pytest.approx({"seed0": 0.0, "seed1": -0.5, "seed2": 0.5})
    diff = comparison.test("other", "minus_reference", "metrics").estimate
    low, high = diff.interval()
    # t interval by hand: std 0.5, n 3, t(0.975, 2) = 4.3027 -> half width 4.3027 * 0.5 / sqrt(3)
    assert diff.mean == pytest.approx(0.0) and high == pytest.approx(4.302653 * 0.5 / 3 ** 0.5, rel=1e-5)
    assert diff.p == pytest.approx(1.0) and not diff.survives
    # every markable figure of the two runs is one test: ew 2 Delta-m + 2 tasks, other the same + 2 differences
    assert len(comparison.tests) == 10
    data = to_json(comparison)
    assert data["tests"] == 10 and data["correction"] == "holm" and data["bootstrap_replicates"] == 0
    assert any("leave out the test set's sampling noise" in w for w in data["warnings"])  # no per-sample files
    ew_json = next(g for g in data["groups"] if g["name"] == "ew")
    assert ew_json["delta_m"]["metrics"]["std"] == pytest.approx(0.0)
    assert ew_json["mean"]["segmentation"]["miou"] == pytest.approx(0.55)
    other_json = next(g for g in data["groups"] if g["name"] == "other")
    assert other_json["delta_m"]["metrics"]["minus_reference"]["survives"] is False
    # each task's own Delta-m: segmentation +20, +20, +21 %; depth -10, -11, -10 %
    assert other_json["task_delta_m"]["segmentation"]["per_seed"] == pytest.approx(
        {"seed0": 20.0, "seed1": 20.0, "seed2": 21.0})
    depth_test = other_json["task_delta_m"]["depth"]["test"]
    assert other_json["task_delta_m"]["depth"]["mean"] == pytest.approx(-31 / 3)
    # t = 10.33 / (0.577 / sqrt 3) = 31.0 on 2 df: p = 0.00104, times the 10 tests Holm may multiply it by
    assert depth_test["p"] == pytest.approx(0.001039, rel=1e-3) and depth_test["survives"] is True
    assert ew_json["task_delta_m"]["depth"]["mean"] == pytest.approx(0.0)
    assert main(["compare", ew, other, "--baselines", seg, dep]) == 0
    parts = sections(capsys.readouterr().out)
    against = parts["Against ew, paired by seed:"].splitlines()
    assert against[0] == "| run | paired seeds | Δm metrics − ew | Δm tasks − ew |"
    assert against[2].startswith("| other | 3 | +0.00 [") and "*" not in against[2]
    per_task = parts["Each task against its single-task baseline (mean ± std over seeds):"].splitlines()
    assert per_task[-1] == "| other | 3 | +20.33 ± 0.58 * | -10.33 ± 0.58 * |"
    assert "Holm's step-down correction" in parts["note"] and "over the 10 tests below" in parts["note"]


def test_consistent_gain_is_marked_only_if_it_survives_the_correction(tmp_path):
    from crossvit_mtl.comparison import compare, reference_markdown

    seg = write_seeds(tmp_path, "single_seg", [{"segmentation": {"miou": 0.5}}] * 3)
    ew = write_seeds(tmp_path, "ew", [{"segmentation": {"miou": m}} for m in (0.50, 0.51, 0.49)])
    better = write_seeds(tmp_path, "better", [{"segmentation": {"miou": m}} for m in (0.60, 0.62, 0.59)])
    noisy = write_seeds(tmp_path, "noisy", [{"segmentation": {"miou": m}} for m in (0.56, 0.58, 0.555)])
    comparison = compare([ew, better, noisy], [seg])
    row = reference_markdown(comparison).splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "better" and cells[-1].endswith("*") and cells[-2].endswith("*")
    assert not comparison.test("ew", "delta", "metrics").estimate.survives  # ew vs single: noise
    # noisy: +13 % on average (+12, +16, +11), its uncorrected 95 % interval excludes 0 (p 0.0135);
    # sixth smallest of 13 p-values, Holm multiplies it by 8 (0.108) ... and the running maximum keeps 0.081
    noisy_test = comparison.test("noisy", "delta", "metrics").estimate
    assert noisy_test.p < 0.05 and noisy_test.p_adjusted > 0.05 and not noisy_test.survives
    uncorrected = compare([ew, better, noisy], [seg], correction="none")
    assert uncorrected.test("noisy", "delta", "metrics").estimate.survives


def test_holm_and_bonferroni_against_hand_counts():
    from crossvit_mtl.comparison import adjust

    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> non-decreasing 0.06
    assert adjust(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adjust(p, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert adjust([0.5, 0.9], "holm") == pytest.approx([1.0, 1.0])  # capped at 1
    # R's p.adjust(c(0.001, 0.01, 0.03, 0.5), "holm"), as MultipleTesting.jl's documentation prints it
    assert adjust([0.001, 0.01, 0.03, 0.5], "holm") == pytest.approx([0.004, 0.03, 0.06, 0.5])
    assert adjust(p, "none") == p
    with pytest.raises(ValueError, match="correction must be one of holm, bonferroni, none"):
        adjust(p, "sidak")


def test_interval_adds_the_test_set_variance_with_welch_degrees_of_freedom():
    from scipy.stats import t

    from crossvit_mtl.comparison import estimate

    points = {"seed1": 1.0, "seed2": 2.0, "seed3": 3.0}
    # seeds: variance 1, n 3 -> a = 1/3. Resamples of the seed mean: 0, 2, 4 (each seed alike) -> v = 4
    reps = {s: np.array([0.0, 2.0, 4.0]) for s in points}
    e = estimate(points, reps, test_samples=11)
    a, v = 1 / 3, 4.0
    df = (a + v) ** 2 / (a ** 2 / 2 + v ** 2 / 10)
    assert e.mean == 2.0 and e.se == pytest.approx((a + v) ** 0.5) and e.df == pytest.approx(df)
    assert e.test_noise and e.p == pytest.approx(2 * t.sf(2.0 / (a + v) ** 0.5, df))
    low, high = e.interval()
    assert high - 2.0 == pytest.approx(t.ppf(0.975, df) * (a + v) ** 0.5)
    plain = estimate(points)  # no resamples: the seed-paired t-interval on n - 1 df
    assert not plain.test_noise and plain.df == 2 and plain.se == pytest.approx(a ** 0.5)
    assert estimate({"seed1": 1.0}).testable is False


def write_classification_run(folder, correct, total=None, digest=None):
    """A run folder of one seed with its test figure and per-sample states, as a test writes them."""
    from crossvit_mtl.comparison import SAMPLES_FILE, write_sample_states

    correct = np.asarray(correct, dtype=np.int64)
    total = np.ones(len(correct), dtype=np.int64) if total is None else np.asarray(total)
    write_run(folder, {"classification": {"top1": correct.sum() / total.sum()}})
    meta = {"scene_classes": ["straight", "curve", "t_junction", "crossroads"]}
    write_sample_states(folder / SAMPLES_FILE, meta, {"classification": {"correct": correct[:, None], "total": total}},
                        {"classification": np.arange(len(correct)) if digest is None else digest})


def test_bootstrap_over_test_samples_against_an_independent_computation(tmp_path):
    """Two seeds, each run tested on the same 8 samples. The test noise of a run's Delta against the
    baseline is the variance over resamples of the seed mean, recomputed here with numpy alone
    from the same resample counts; for a top-1 of p on N samples the bootstrap variance of one
    seed's accuracy tends to p (1 - p) / N."""
    from crossvit_mtl.comparison import bootstrap_counts, compare, read_sample_states, replicate_results

    base = [[1, 1, 0, 0, 1, 0, 1, 0], [1, 0, 1, 0, 1, 0, 1, 1]]
    ew = [[1, 1, 1, 0, 1, 0, 1, 1], [1, 1, 1, 0, 1, 1, 1, 1]]
    for seed in (0, 1):
        write_classification_run(tmp_path / "single_cls" / f"seed{seed}", base[seed])
        write_classification_run(tmp_path / "ew" / f"seed{seed}", ew[seed])
    comparison = compare([tmp_path / "ew"], [tmp_path / "single_cls"], bootstrap=2000)
    assert comparison.replicates == 2000 and comparison.test_samples == 8
    counts = bootstrap_counts(8, 2000)
    b, e = np.array(base, float), np.array(ew, float)
    with np.errstate(divide="ignore", invalid="ignore"):  # a resample with no correct baseline sample: dropped
        delta = ((counts @ e.T) / (counts @ b.T) - 1) * 100  # (resamples, seeds)
    v = np.nanvar(delta.mean(1)[np.isfinite(delta.mean(1))], ddof=1)
    points = (e.sum(1) / b.sum(1) - 1) * 100
    a = points.var(ddof=1) / 2
    test = comparison.test("ew", "task", "classification").estimate
    assert test.test_noise and test.mean == pytest.approx(points.mean())
    assert test.se ** 2 == pytest.approx(a + v, rel=1e-9)
    # one seed's accuracy p = 6/8: bootstrap variance near p (1 - p) / N = 0.0234
    accuracy = [r["classification"]["top1"] for r in replicate_results(read_sample_states(
        tmp_path / "ew" / "seed0" / "test_samples.npz"), counts)]
    assert np.var(accuracy) == pytest.approx(0.75 * 0.25 / 8, rel=0.1)


def test_unpaired_seeds_are_refused_and_other_mismatches_said(tmp_path, capsys):
    from crossvit_mtl.comparison import ComparisonError, compare

    seg = write_seeds(tmp_path, "single_seg", [{"segmentation": {"miou": m}} for m in (0.5, 0.4)])
    ew = write_seeds(tmp_path, "ew", [{"segmentation": {"miou": m}} for m in (0.5, 0.4, 0.6)])
    with pytest.raises(ComparisonError, match=r"^ew seed2: baseline single_seg has no seed2 \(it has seed0, seed1\); "
                                              r"Delta-m pairs each seed with the baselines of the same seed"):
        compare([ew], [seg])
    assert main(["compare", ew, "--baselines", seg]) == 2
    assert "error: RUN ew seed2: baseline single_seg has no seed2" in capsys.readouterr().err
    # the seeds both have
    assert len(compare([ew], [seg], seeds=[0, 1]).runs[0].seeds) == 2
    assert main(["compare", ew, "--baselines", seg, "--seeds", "0", "1"]) == 0
    # a metric finite in one seed only is left out of every seed, and said; runs picked by other rules
    nan_seed = write_seeds(tmp_path, "other", [{"segmentation": {"miou": 0.6, "pixel_acc": 0.9}},
                                               {"segmentation": {"miou": 0.5, "pixel_acc": None}}])
    base2 = write_seeds(tmp_path, "single_seg2", [{"segmentation": {"miou": 0.5, "pixel_acc": 0.8}}] * 2)
    comparison = compare([nan_seed], [base2])
    assert any("other: segmentation pixel_acc not finite in every seed; left out" in w for w in comparison.warnings)
    assert comparison.runs[0].delta["metrics"] == pytest.approx({"seed0": 20.0, "seed1": 0.0})
    payload = json.loads((tmp_path / "other" / "seed0" / "metrics_test.json").read_text())
    (tmp_path / "other" / "seed0" / "metrics_test.json").write_text(json.dumps({**payload, "checkpoint_selection": "val_metric"}))
    assert any("not picked by one rule" in w and "other not recorded/val_metric" in w
               for w in compare([nan_seed], [base2]).warnings)


def write_sweep(path, sweep_dir):
    spec = {
        "sweep_dir": str(sweep_dir),
        # every test scene tested: the comparisons bootstrap over them
        "base": tiny_config(model={"scheduler": "none"}, data={"tasks": ["segmentation", "depth"]},
                            trainer={"max_steps": 1, "logger": False, "limit_test_batches": None}),
        "runs": {"seg": {"baseline": True, "data": {"tasks": ["segmentation"]}},
                 "depth": {"baseline": True, "data": {"tasks": ["depth"]}},
                 "uw": {"model": {"weighting": "uw"}},
                 "upgrad": {"model": {"weighting": "upgrad"}}},
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def test_sweep_dry_run_prints_the_plan_and_runs_nothing(tmp_path, capsys):
    config = write_sweep(tmp_path / "sweep.yaml", tmp_path / "sweep")
    assert main(["sweep", config, "--dry-run", "--seeds", "0", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 * 2
    assert lines[0] == (f"seg seed 0 (baseline): crossvit-mtl fit --config {tmp_path}/sweep/configs/seg.yaml "
                        f"--run_dir {tmp_path}/sweep/seg/seed0 --seed_everything 0 --test_after_fit true")
    assert lines[-1].startswith("upgrad seed 1: ") and f"--run_dir {tmp_path}/sweep/upgrad/seed1" in lines[-1]
    assert not (tmp_path / "sweep").exists()
    _, planned = plan(config)
    assert [r["seed"] for r in planned[:3]] == [0, 1, 2]  # three seeds unless told otherwise
    assert planned[6]["config"]["model"]["weighting"] == "uw"
    assert planned[6]["config"]["model"]["model_options"]["dims"] == [32, 64]  # merged, not replaced
    with pytest.raises(UserError, match="--runs: no run 'nope'"):
        plan(config, only=["nope"])
    spec = yaml.safe_load(Path(config).read_text())
    spec["runs"]["upgrad"]["seeds"] = [0]  # a run of its own seeds (screened out on one)
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(spec))
    _, planned = plan(tmp_path / "own.yaml")
    assert [r["seed"] for r in planned if r["name"] == "upgrad"] == [0]
    assert [r["seed"] for r in planned if r["name"] == "uw"] == [0, 1, 2]
    assert [r["seed"] for r in plan(tmp_path / "own.yaml", seeds=[4])[1] if r["name"] == "upgrad"] == [4]
    with pytest.raises(UserError, match="seeds must be a list of distinct integers"):
        plan(config, seeds=[1, 1])


@pytest.mark.heavy
def test_sweep_screens_on_val_then_tests_on_fresh_seeds(tmp_path, capsys):
    config = write_sweep(tmp_path / "sweep.yaml", tmp_path / "sweep")
    spec = yaml.safe_load(Path(config).read_text())
    spec["screen_seeds"], spec["seeds"] = [0], [1, 2]
    spec["runs"]["upgrad"]["test"] = False  # screened out
    spec["runs"]["later"] = {"screen": False, "model": {"weighting": "ew"}}  # a planned comparison, never screened
    Path(config).write_text(yaml.safe_dump(spec, sort_keys=False))
    _, planned = plan(config)
    stages = {(r["name"], r["seed"]): r["stage"] for r in planned}
    assert stages == {**{(n, 0): "screen" for n in ("seg", "depth", "uw", "upgrad")},
                      **{(n, s): "test" for n in ("seg", "depth", "uw", "later") for s in (1, 2)}}
    assert main(["sweep", config, "--runs", "seg", "uw"]) == 0
    out = capsys.readouterr().out
    assert "not finished" in out and not (tmp_path / "sweep" / "compare.json").exists()
    assert main(["sweep", config]) == 0
    out = capsys.readouterr().out
    assert "seg seed 0 (baseline): finished, skipped" in out  # a second call continues, it does not redo
    assert (tmp_path / "sweep" / "uw" / "seed1" / "test_samples.npz").is_file()
    screen = json.loads((tmp_path / "sweep" / "screen.json").read_text())
    test = json.loads((tmp_path / "sweep" / "compare.json").read_text())
    assert screen["split"] == "val" and test["split"] == "test"
    assert [g["name"] for g in screen["groups"]] == ["seg", "depth", "uw", "upgrad"]
    assert [g["name"] for g in test["groups"]] == ["seg", "depth", "uw", "later"]  # upgrad: screened out
    assert all(set(g["seeds"]) == {"seed0"} for g in screen["groups"])
    assert all(set(g["seeds"]) == {"seed1", "seed2"} for g in test["groups"])  # never the screening seed
    assert test["bootstrap_replicates"] > 0 and test["test_samples"] == 4  # the test set's noise is in
    assert all(set(g["checkpoint_selection"].values()) == {"last"} for g in test["groups"])
    assert "Screen: every screened run on val" in out and "Test: the runs carried to test" in out
    # the docs' tables, regenerated from the finished sweep folder by one command
    script = runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "sweep_tables.py"))
    page = tmp_path / "page.md"
    page.write_text("before\n<!-- sweep tables: the command -->\nOLD TABLE\n<!-- end of sweep tables -->\nafter\n")
    script["replace_region"](page, script["tables"](config, bootstrap=50))
    text = page.read_text()
    assert text.startswith("before\n<!-- sweep tables: the command -->\n\n**Screen: every screened run on val")
    assert text.endswith("\n<!-- end of sweep tables -->\nafter\n") and "OLD TABLE" not in text
    sweep = tmp_path / "sweep"
    assert (f"(`crossvit-mtl compare {sweep}/uw {sweep}/later --baselines {sweep}/seg {sweep}/depth --seeds 1 2`)"
            in text)
    assert "Each task against its single-task baseline" in text and "Against ew" not in text  # no ew here
    (tmp_path / "plain.md").write_text("no markers\n")
    with pytest.raises(UserError, match="plain.md: no `<!-- sweep tables ... -->` and `<!-- end of sweep tables -->`"):
        script["replace_region"](tmp_path / "plain.md", "x")


def test_a_sweep_has_one_rule_one_augmentation_and_fresh_test_seeds(tmp_path):
    config = write_sweep(tmp_path / "sweep.yaml", tmp_path / "sweep")
    spec = yaml.safe_load(Path(config).read_text())

    def planned(**change):
        variant = copy.deepcopy(spec)
        for key, value in change.items():
            variant["runs"][key] = {**variant["runs"][key], **value}
        (tmp_path / "v.yaml").write_text(yaml.safe_dump(variant, sort_keys=False))
        return plan(tmp_path / "v.yaml")

    with pytest.raises(UserError, match=r"runs 'seg' and 'uw' differ in checkpoint_selection \('last' against "
                                        r"'val_loss'\); every run of a sweep shares one"):
        planned(uw={"checkpoint_selection": "val_loss"})
    with pytest.raises(UserError, match=r"runs 'seg' and 'upgrad' differ in data.train_transforms"):
        planned(upgrad={"data": {"train_transforms": {"scales": [1.0, 1.5]}}})
    spec["base"]["checkpoint_selection"] = "val_metric"
    with pytest.raises(UserError, match="val_metric picks a multi-task run by one task's metric and each baseline by "
                                        "its own"):
        planned()
    spec["base"]["checkpoint_selection"] = "val_loss"
    assert planned()[1]
    with pytest.raises(UserError, match=r"runs.uw.test must be true or false, got 'no'"):
        planned(uw={"test": "no"})
    spec["screen_seeds"] = [0]
    with pytest.raises(UserError, match="seed 0 is a screening seed and a test seed; the test comparison needs seeds "
                                        "the screen never saw"):
        planned()


def test_shipped_sweep_config_plans_baselines_and_methods():
    _, planned = plan(config_path("sweep_synth.yaml"))
    baselines = [r for r in planned if r["baseline"]]
    tasks = {r["name"]: tuple(r["config"]["data"]["tasks"]) for r in baselines}
    assert sorted(t for names in tasks.values() for t in names) == sorted(
        ["segmentation", "depth", "normal", "classification"])
    methods = {r["config"]["model"].get("weighting") for r in planned if not r["baseline"]}
    assert {"ew", "upgrad", "nashmtl", "cagrad", "pcgrad", "uw", "dwa", "rlw", "gls"} <= methods
    screen = {r["seed"] for r in planned if r["stage"] == "screen"}
    test = {r["seed"] for r in planned if r["stage"] == "test"}
    assert screen == {0} and test == {1, 2, 3}  # the test comparison never sees the screening seed
    carried = {r["name"] for r in planned if r["stage"] == "test" and not r["baseline"]}
    assert carried == {"ew", "ew_cross_task_attention", "ew_cls_fusion", "nashmtl", "cagrad", "gls"}
    assert len(planned) == 13 + 10 * 3
    variants = {r["name"]: r["config"]["model"].get("model_options", {}) for r in planned}
    assert variants["ew_cls_fusion"] == {"fusion": "cls"}
    assert variants["ew_cross_task_attention"] == {"task_interaction": "cross_attention"}
    assert {r["config"].get("checkpoint_selection") for r in planned} == {"last"}


def test_shipped_sweep_trains_every_run_on_a_class_label_in_every_image():
    """The sweep's augmentation keeps every label: no sample of the classification baseline or of a
    multi-task run loses its class to a crop (the scenes' crops mark it ignored)."""
    from crossvit_mtl.data.synth import SynthScenes, synth_info
    from crossvit_mtl.data.transforms import build_transforms
    from crossvit_mtl.tasks import IGNORE_INDEX

    _, planned = plan(config_path("sweep_synth.yaml"))
    configs = {r["name"]: r["config"]["data"]["train_transforms"] for r in planned
               if "classification" in r["config"]["data"]["tasks"]}
    assert len({json.dumps(c, sort_keys=True) for c in configs.values()}) == 1  # one pipeline
    pipeline = build_transforms(synth_info(), train=True, config=next(iter(configs.values())))
    names = [type(step).__name__ for step in pipeline.transforms]
    assert "RandomHorizontalFlip" in names and "ColorJitter" in names and "RandomScaleCrop" not in names
    data = SynthScenes("train", length=8, height=32, width=64, transform=pipeline)
    for index in range(8):
        for seed in range(3):  # each draw of the sample's augmentation
            assert int(data[(index, seed)]["classification"]) != IGNORE_INDEX
    # the library's default pipeline (MTAN's scales 1, 1.2, 1.5) drops it on most samples
    default = SynthScenes("train", length=8, height=32, width=64, transform=build_transforms(synth_info(), train=True))
    dropped = sum(int(default[(i, s)]["classification"]) == IGNORE_INDEX for i in range(8) for s in range(3))
    assert dropped > 8


@pytest.mark.parametrize("name", ["demo.yaml", "synth_mtl.yaml", "synth_five_tasks.yaml", "cityscapes_mtan_seg_depth.yaml",
                                  "nyuv2_mtan.yaml"])
def test_shipped_mtl_configs_parse(name, capsys):
    """Every multi-task config parses, and its model options are ones its network takes."""
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(config_path(name)), "--print_config"])
    assert exc.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["weighting"] in ("ew", "fixed", "dwa", "upgrad")
    assert len(printed["data"]["tasks"]) >= 2
    create_model(printed["model"]["model"], **(printed["model"]["model_options"] or {}))
    if printed["data"]["dataset"] == "synth":  # its losses and options build on the scenes' description
        from crossvit_mtl.data.synth import synth_info
        from crossvit_mtl.engine.module import DenseTaskModule

        info = synth_info()
        meta = {**info.as_meta(), "tasks": printed["data"]["tasks"], "image_size": [96, 192],
                "task_channels": {t: c for t, c in info.task_channels().items() if t in printed["data"]["tasks"]}}
        module = DenseTaskModule(**{k: v for k, v in printed["model"].items() if k != "dataset_meta"}, dataset_meta=meta)
        assert module.tasks == printed["data"]["tasks"]


def test_published_figures_sit_beside_the_runs_with_mti_nets_delta_m(tmp_path, capsys):
    """`--published nyud_v2`: the papers' rows in the project's units, on the runs' tasks, the metrics
    they report beside each primary one, and MTI-Net's Delta-m (one metric per task) against each
    seed of the baselines given, untested; without baselines, the figures alone."""
    from crossvit_mtl.comparison import compare, report_markdown, to_json
    from crossvit_mtl.data.published import PUBLISHED

    seg = write_run(tmp_path / "seg", {"segmentation": {"miou": 0.50, "pixel_acc": 0.7}})
    dep = write_run(tmp_path / "dep", {"depth": {"abs_err": 0.40, "rel_err": 0.15, "rmse": 0.60}})
    nor = write_run(tmp_path / "nor", {"normal": {"mean": 20.0, "median": 14.0}})
    edg = write_run(tmp_path / "edg", {"edge": {"odsf": 0.75, "oisf": 0.76, "ap": 0.7}})
    mtl = write_run(tmp_path / "mtl", {"segmentation": {"miou": 0.55, "pixel_acc": 0.7},
                                       "depth": {"abs_err": 0.40, "rel_err": 0.15, "rmse": 0.54},
                                       "normal": {"mean": 22.0, "median": 15.0}, "edge": {"odsf": 0.75, "oisf": 0.75, "ap": 0.7}})
    comparison = compare([mtl], [seg, dep, nor, edg], metric_set="single", published="nyud_v2")
    invpt = next(g for g in comparison.groups if g.name == "InvPT (published)")
    assert invpt.published and invpt.seeds[""] == {"segmentation": {"miou": 0.5356}, "depth": {"rmse": 0.5183},
                                                   "normal": {"mean": 19.04}, "edge": {"odsf": 0.781}}
    # MTI-Net's Delta-m by hand: seg +7.12 %, depth RMSE 0.6 -> 0.5183: +13.6167 %, normals 20 -> 19.04:
    # +4.8 %, edges 0.75 -> 0.781: +4.1333 %; mean +7.4175 %
    expected = (7.12 + (0.6 - 0.5183) / 0.6 * 100 + 4.8 + (0.781 - 0.75) / 0.75 * 100) / 4
    assert invpt.delta["metrics"][""] == pytest.approx(expected)
    mine = next(g for g in comparison.groups if g.name == "mtl")
    assert mine.delta["metrics"][""] == pytest.approx((10.0 + 10.0 - 10.0 + 0.0) / 4)
    assert {t.group for t in comparison.tests} == {"mtl"}  # figures, not runs: nothing of theirs is tested
    text = report_markdown(comparison)
    table = sections(text)["Metrics (mean ± std over seeds) and Δm against the single-task baselines:"].splitlines()
    assert "depth abs err ↓ | depth RMSE ↓" in table[0]  # the primary metric, and the one the papers report
    row = next(line for line in table if line.startswith("| TaskPrompter (published) | - |"))
    assert "0.5590" in row and "0.5062" in row and "18.5800" in row and "0.7770" in row and "*" not in row
    tasks = sections(text)["Each task against its single-task baseline (mean ± std over seeds):"]
    assert "| InvPT (published) | - | +7.12 |" in tasks  # segmentation 0.5 -> 0.5356
    assert "Published rows: the papers' nyud_v2 figures on val" in text and "leaves out" not in text
    assert [g["published"] for g in to_json(comparison)["groups"]][-4:] == [True] * 4
    # the default set's other metrics are not reported by the papers: named, left out of their Delta-m
    default = report_markdown(compare([mtl], [seg, dep, nor, edg], published="nyud_v2"))
    assert "leaves out what they do not report: depth abs_err, depth rel_err, normal median, segmentation pixel_acc" \
        in default
    # the published rows take the runs' tasks only; without baselines there is no Delta-m
    assert main(["compare", seg, "--published", "pascal_context"]) == 0
    out = capsys.readouterr().out
    parts = out.strip().split("\n\n")
    header = parts[parts.index("Metrics (mean ± std over seeds):") + 1].splitlines()[0]
    assert "| InvPT (published) | - | 0.7903 |" in out and "saliency" not in header
    assert "No single-task baselines" in out and "Δm" not in header
    assert len(PUBLISHED["pascal_context"]) == len(PUBLISHED["nyud_v2"]) == 4


def test_published_figures_meet_each_seed_of_the_baselines(tmp_path):
    """Baselines of several seeds: a published row's Delta-m per baseline seed (no mean of the
    baselines), shown as mean ± std over those seeds."""
    from crossvit_mtl.comparison import compare

    for seed, miou in (("seed0", 0.50), ("seed1", 0.40)):
        write_run(tmp_path / "seg" / seed, {"segmentation": {"miou": miou}})
        write_run(tmp_path / "mtl" / seed, {"segmentation": {"miou": 0.45}})
    comparison = compare([str(tmp_path / "mtl")], [str(tmp_path / "seg")], metric_set="single",
                         published="pascal_context", bootstrap=0)
    invpt = next(g for g in comparison.groups if g.name == "InvPT (published)")
    assert invpt.delta["metrics"] == pytest.approx({"seed0": (0.7903 - 0.5) / 0.5 * 100,
                                                    "seed1": (0.7903 - 0.4) / 0.4 * 100})
    assert invpt.task_delta["segmentation"] == invpt.delta["metrics"]


def test_published_figures_refuse_runs_of_other_tasks_and_need_baselines_otherwise(tmp_path, capsys):
    cls = write_run(tmp_path / "cls", {"classification": {"top1": 0.9}})
    assert main(["compare", cls, "--published", "nyud_v2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "share no task with the published nyud_v2 figures" in err
    assert main(["compare", cls]) == 2
    assert "--baselines required" in capsys.readouterr().err
    assert main(["compare", cls, "--published", "nyud_v2", "--reference", "cls"]) == 2
    assert "needs single-task baselines" in capsys.readouterr().err
